package relay_test

import (
	"encoding/binary"
	"strings"
	"testing"

	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/wire"
)

// fuzzKey is the fuzzing client's key, fixed so seeds can name its mailbox.
var fuzzKey, _ = channel.NewKeyPair([32]byte{1, 2, 3})

// splitFrames turns fuzz input into frames: type u8 | len u16 | payload,
// repeated; a short last payload is taken as it is.
func splitFrames(data []byte) []wire.Frame {
	var out []wire.Frame
	for len(data) >= 3 && len(out) < 32 {
		t := wire.Type(data[0])
		n := int(binary.BigEndian.Uint16(data[1:3]))
		data = data[3:]
		n = min(n, len(data))
		out = append(out, wire.Frame{Type: t, Payload: data[:n]})
		data = data[n:]
	}
	return out
}

func joinFrames(msgs ...wire.Message) []byte {
	var b []byte
	for _, m := range msgs {
		p, err := m.MarshalBinary()
		if err != nil {
			panic(err)
		}
		b = append(b, byte(m.Type()))
		b = binary.BigEndian.AppendUint16(b, uint16(len(p)))
		b = append(b, p...)
	}
	return b
}

// FuzzFrames sends arbitrary frames to a relay after the handshake. The
// relay must not panic, and it must either keep serving (answer a Ping
// sent afterwards) or end the connection with a protocol-violation error
// after telling the client so.
func FuzzFrames(f *testing.F) {
	mb := channel.MailboxID(fuzzKey.Public)
	tok := token(1)
	f.Add(joinFrames(wire.Ping{Nonce: 1}))
	f.Add(joinFrames(wire.Send{ID: id(1), To: mb, Token: tok, Envelope: []byte("hello")}, wire.Subscribe{ReqID: 1}))
	f.Add(joinFrames(wire.Subscribe{ReqID: 1}, wire.Send{ID: id(1), To: mb, Token: tok, Envelope: []byte("x")}, wire.Ack{Seqs: []uint64{1, 2}}))
	f.Add(joinFrames(wire.SetToken{ReqID: 2, Token: token(2)}, wire.Send{ID: id(2), To: mb, Token: tok}))
	f.Add(joinFrames(wire.PutPrekeys{ReqID: 3, Signed: []byte("s"), OneTime: []wire.Prekey{{ID: 1, Data: []byte("k")}}, KEM: []wire.Prekey{{ID: 2, Data: []byte("m")}}, LastResort: []byte("l")},
		wire.GetBundle{ReqID: 4, Mailbox: mb, Token: tok}))
	f.Add(joinFrames(wire.GetBundle{ReqID: 5, Mailbox: [16]byte{9}, Token: tok}, wire.Pong{Nonce: 3}))
	f.Add(joinFrames(wire.OK{ReqID: 1}))
	f.Add(joinFrames(wire.Deliver{Seq: 1, Envelope: []byte("x")}))
	f.Add([]byte{0xee, 0, 3, 1, 2, 3, byte(wire.TypeSend), 0, 2, 0, 0})
	f.Add([]byte{byte(wire.TypeAck), 0, 2, 0, 0})

	f.Fuzz(func(t *testing.T, data []byte) {
		e := newEnv(t, nil)
		c := e.dial(fuzzKey, nil)
		c.register(tok)
		for _, fr := range splitFrames(data) {
			if err := c.ch.Send(t.Context(), fr); err != nil {
				break // the relay hung up; checked below
			}
		}
		c.ch.Send(t.Context(), mustFrame(wire.Ping{Nonce: 0xf0f0}))
		sawError := false
		for m := range c.msgs {
			switch m := m.(type) {
			case wire.Pong:
				if m.Nonce == 0xf0f0 {
					return // still serving
				}
			case wire.Error:
				if m.Code == wire.CodeBadRequest {
					sawError = true
				}
			}
		}
		err := c.closed()
		if err == nil || !strings.Contains(err.Error(), "protocol violation") {
			t.Fatalf("relay ended the connection with %v, want a protocol violation", err)
		}
		if !sawError {
			t.Fatal("relay ended the connection without an Error frame saying why")
		}
	})
}

func mustFrame(m wire.Message) wire.Frame {
	f, err := wire.NewFrame(m)
	if err != nil {
		panic(err)
	}
	return f
}
