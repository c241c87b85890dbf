package channel

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/flynn/noise"

	"github.com/ferry-im/ferry/wire"
)

// byteConn is a net.Conn that reads from a fixed buffer and discards writes.
type byteConn struct {
	net.Conn // nil: other methods are not used
	r        *bytes.Reader
	closed   bool
}

func (c *byteConn) Read(p []byte) (int, error) {
	if c.closed {
		return 0, net.ErrClosed
	}
	return c.r.Read(p)
}
func (c *byteConn) Write(p []byte) (int, error) {
	if c.closed {
		return 0, net.ErrClosed
	}
	return len(p), nil
}
func (c *byteConn) Close() error                     { c.closed = true; return nil }
func (c *byteConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *byteConn) SetDeadline(time.Time) error      { return nil }
func (c *byteConn) SetReadDeadline(time.Time) error  { return nil }
func (c *byteConn) SetWriteDeadline(time.Time) error { return nil }

// fixedKeys returns deterministic client and relay keys for the fuzzers.
func fixedKeys(t testing.TB) (cli, relay KeyPair) {
	var a, b [32]byte
	a[0], b[0] = 1, 2
	cli, err := NewKeyPair(a)
	if err != nil {
		t.Fatal(err)
	}
	relay, err = NewKeyPair(b)
	if err != nil {
		t.Fatal(err)
	}
	return cli, relay
}

// cipherPair runs a handshake in memory and returns the client's sending
// state and the relay's receiving state.
func cipherPair(t testing.TB) (clientEnc, relayDec, relayEnc *noise.CipherState) {
	cli, relay := fixedKeys(t)
	eph := bytes.Repeat([]byte{3}, 64)
	ihs, _ := noise.NewHandshakeState(noiseConfig(true, cli, relay.Public[:], bytes.NewReader(eph[:32]), Prologue))
	rhs, _ := noise.NewHandshakeState(noiseConfig(false, relay, nil, bytes.NewReader(eph[32:]), Prologue))
	m1, _, _, _ := ihs.WriteMessage(nil, nil)
	if _, _, _, err := rhs.ReadMessage(nil, m1); err != nil {
		t.Fatal(err)
	}
	m2, rdec, renc, _ := rhs.WriteMessage(nil, nil)
	_, cenc, _, err := ihs.ReadMessage(nil, m2)
	if err != nil {
		t.Fatal(err)
	}
	return cenc, rdec, renc
}

// splitRecords turns fuzz bytes into record plaintexts: each starts with a
// u16 length (reduced modulo the largest plaintext).
func splitRecords(b []byte) [][]byte {
	var recs [][]byte
	for len(b) >= 2 {
		n := int(binary.BigEndian.Uint16(b)) % (recordHeaderLen + MaxRecordData + 1)
		b = b[2:]
		n = min(n, len(b))
		recs = append(recs, b[:n])
		b = b[n:]
	}
	return recs
}

func joinRecords(recs ...[]byte) []byte {
	var out []byte
	for _, r := range recs {
		out = binary.BigEndian.AppendUint16(out, uint16(len(r)))
		out = append(out, r...)
	}
	return out
}

func rec(stream uint32, flags byte, data ...[]byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, stream)
	b = append(b, flags)
	for _, d := range data {
		b = append(b, d...)
	}
	return b
}

func env(t wire.Type, n int) []byte {
	b, _ := wire.AppendFrame(nil, wire.Frame{Type: t, Payload: bytes.Repeat([]byte{'x'}, n)})
	return b
}

// FuzzRecords feeds authenticated but arbitrary record plaintexts, then
// arbitrary unauthenticated bytes, to a relay-side channel: it must never
// panic, never keep more than maxPartial frames in transit, never hold a
// reassembly buffer over twice the bytes received (or minFrameBuf), charge
// exactly its buffers (and its pooled read buffer) to the budget and give
// them all back at the end, and
// return only frames within the limits.
func FuzzRecords(f *testing.F) {
	big := env(1, 40000)
	f.Add(joinRecords(rec(1, flagFin, env(1, 5))), []byte(nil))
	f.Add(joinRecords(nil, rec(1, flagFin, env(wire.TypePing, 8))), []byte(nil))
	f.Add(joinRecords(rec(1, 0, big[:MaxRecordData]), rec(2, flagFin, env(2, 1)), rec(1, 0, big[MaxRecordData:2*MaxRecordData]), rec(1, flagFin, big[2*MaxRecordData:])), []byte(nil))
	f.Add(joinRecords(rec(1, 0, big[:100]), rec(1, flagAbort)), []byte(nil))
	f.Add(joinRecords(rec(1, 0, big[:10]), rec(2, 0, big[:10]), rec(3, 0, big[:10]), rec(4, 0, big[:10]), rec(5, 0, big[:10])), []byte(nil))
	f.Add(joinRecords(rec(7, flagFin|flagAbort)), []byte(nil))
	f.Add(joinRecords(rec(1, flagFin, []byte{1, 0, 0x10, 0, 1})), []byte(nil))
	f.Add(joinRecords(rec(1, flagFin, env(1, 5))), []byte{0, 17, 1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte, raw []byte) {
		enc, dec, renc := cipherPair(t)
		var stream []byte
		for _, p := range splitRecords(b) {
			stream = binary.BigEndian.AppendUint16(stream, uint16(len(p)+tagLen))
			stream, _ = enc.Encrypt(stream, nil, p)
		}
		// Then unauthenticated bytes, as an attacker on the path would send.
		stream = append(stream, raw...)
		conn := &byteConn{r: bytes.NewReader(stream)}
		var peer [32]byte
		c := newConn(conn, peer, renc, dec, (*Config)(nil).logger())
		var budget countingBudget
		c.budget = &budget
		for i := 0; ; i++ {
			fr, err := c.Recv(context.Background())
			if len(c.partial) > maxPartial {
				t.Fatalf("%d frames in transit, limit %d", len(c.partial), maxPartial)
			}
			held := 0
			if c.rbuf != nil && c.rbuf != &c.smallBuf {
				held += len(*c.rbuf) // the read buffer of a record read ahead
			}
			for _, in := range c.partial {
				held += cap(in.buf)
				if cap(in.buf) > max(minFrameBuf, 2*len(in.buf)) {
					t.Fatalf("buffer of %d bytes for %d received", cap(in.buf), len(in.buf))
				}
			}
			if got, _ := budget.get(); got != held {
				t.Fatalf("budget holds %d bytes, buffers %d", got, held)
			}
			if err != nil {
				if err != io.EOF && !errors.Is(err, ErrProtocol) && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("unexpected error kind: %v", err)
				}
				if err != io.EOF && !conn.closed {
					t.Fatal("conn not closed after a protocol error")
				}
				return
			}
			if len(fr.Payload) > wire.MaxPayload {
				t.Fatalf("frame of %d bytes", len(fr.Payload))
			}
		}
	})
}

// FuzzServerHandshake feeds arbitrary bytes to a relay before the
// handshake: Server must fail, close the conn and not panic.
func FuzzServerHandshake(f *testing.F) {
	cli, relay := fixedKeys(f)
	hs, _ := noise.NewHandshakeState(noiseConfig(true, cli, relay.Public[:], bytes.NewReader(bytes.Repeat([]byte{5}, 32)), Prologue))
	m1, _, _, _ := hs.WriteMessage(nil, nil)
	f.Add(joinRecords(m1))
	f.Add(joinRecords(m1, make([]byte, tagLen)))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte{0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		conn := &byteConn{r: bytes.NewReader(b)}
		c, err := (&Config{Rand: bytes.NewReader(bytes.Repeat([]byte{6}, 32))}).Server(context.Background(), conn, relay)
		if err == nil {
			c.Close()
			t.Fatal("Server accepted bytes no client produced")
		}
		if !conn.closed {
			t.Fatal("conn not closed after a failed handshake")
		}
	})
}

// FuzzSendRecv sends the fuzz input as a frame over a real channel and
// checks it arrives unchanged (the record layer's round trip).
func FuzzSendRecv(f *testing.F) {
	f.Add(byte(1), []byte("hello"), uint16(0))
	f.Add(byte(0x21), bytes.Repeat([]byte{7}, 3*MaxRecordData+1), uint16(40000))
	f.Fuzz(func(t *testing.T, typ byte, payload []byte, extra uint16) {
		if len(payload) > 64<<10 {
			return
		}
		cli, srv, _, _ := pipePair(t)
		p := append(payload, make([]byte, int(extra))...) // reach multi-record sizes
		go cli.Send(context.Background(), wire.Frame{Type: wire.Type(typ), Payload: p})
		got, err := srv.Recv(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if got.Type != wire.Type(typ) || !bytes.Equal(got.Payload, p) || (len(p) == 0) != (len(got.Payload) == 0) {
			t.Fatalf("got type %v len %d, want type %v len %d", got.Type, len(got.Payload), typ, len(p))
		}
	})
}
