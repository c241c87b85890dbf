package obfs

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"

	"github.com/ferry-im/ferry/link"
)

func FuzzParseClientHello(f *testing.F) {
	_, pub := testRelayKey(f, 7)
	rnd := seeded(20)
	for _, sh := range allShapes[:4] {
		h, err := newClientHello(rnd, pub, sh, testNow)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(h.raw)
		f.Add(h.raw[:len(h.raw)/2])
	}
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, buf []byte) {
		st, repr, mark := parseClientHello(buf, pub, testNow)
		switch st {
		case helloOK:
			if len(mark) != markLen || !bytes.Contains(buf, repr[:]) {
				t.Fatal("accepted hello without its representative and mark")
			}
			fallthrough
		case helloBad:
			// A decision is final: more bytes never make a bad hello good
			// nor keep a good one good.
			if st2, _, _ := parseClientHello(append(append([]byte(nil), buf...), 0), pub, testNow); st2 != helloBad && len(buf) < maxHello {
				t.Fatalf("status %d, then %d with one more byte", st, st2)
			}
		}
	})
}

func FuzzClientFinish(f *testing.F) {
	relay, pub := testRelayKey(f, 8)
	rnd := seeded(21)
	h, err := newClientHello(rnd, pub, shape{kind: 'l'}, testNow)
	if err != nil {
		f.Fatal(err)
	}
	st, repr, _ := parseClientHello(h.raw, pub, testNow)
	if st != helloOK {
		f.Fatal("seed hello rejected")
	}
	reply, _, err := serverHandshake(rnd, relay, h.raw, &repr)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(reply)
	f.Add(append(append([]byte(nil), reply...), 9, 9, 9))
	f.Add(reply[:70])
	f.Fuzz(func(t *testing.T, buf []byte) {
		c := &clientHello{kp: h.kp, raw: h.raw}
		st, keys, used, err := c.finish(buf, pub)
		switch st {
		case helloOK:
			if keys == nil || used > len(buf) || used < minHello-1 && used > len(reply) {
				t.Fatalf("accepted with keys %v, used %d of %d", keys != nil, used, len(buf))
			}
		case helloBad:
			if err == nil {
				t.Fatal("rejected without an error")
			}
		}
	})
}

// bytesConn is a net.Conn that reads from a byte slice.
type bytesConn struct {
	net.Conn
	r io.Reader
}

func (c bytesConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// sealFrames returns the frames a writer with keys k sends for payloads.
func sealFrames(t testing.TB, k []byte, payloads ...[]byte) []byte {
	t.Helper()
	var out bytes.Buffer
	w, err := newConn(&bytesConn{r: bytes.NewReader(nil)}, k, k, [32]byte{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Conn = writerConn{w: &out}
	for _, p := range payloads {
		if _, err := w.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	return out.Bytes()
}

// writerConn is a net.Conn that writes to w.
type writerConn struct {
	net.Conn
	w io.Writer
}

func (c writerConn) Write(p []byte) (int, error) { return c.w.Write(p) }

// FuzzFrames reads arbitrary bytes as frames: it never panics, and frames
// sealed with the keys round-trip to their payloads.
func FuzzFrames(f *testing.F) {
	k := bytes.Repeat([]byte{3}, dirLen)
	f.Add(sealFrames(f, k, []byte("hello"), bytes.Repeat([]byte{1}, 5000), nil))
	f.Add(sealFrames(f, k, []byte("x")))
	f.Add([]byte{0, 0})
	f.Fuzz(func(t *testing.T, stream []byte) {
		c, err := newConn(bytesConn{r: bytes.NewReader(stream)}, k, k, [32]byte{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(c)
		if err == nil {
			// A clean read: re-sealing the payload and reading it back
			// gives the same payload.
			c2, _ := newConn(bytesConn{r: bytes.NewReader(sealFrames(t, k, got))}, k, k, [32]byte{}, nil)
			again, err := io.ReadAll(c2)
			if err != nil || !bytes.Equal(again, got) {
				t.Fatalf("round trip: %v", err)
			}
		} else if !errors.Is(err, errFrame) && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("unexpected error %v", err)
		}
	})
}

func FuzzEndpointParams(f *testing.F) {
	f.Add("obfs=relay.example:443,key=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8,fet=p7")
	f.Add("obfs=relay.example:443,key=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8")
	f.Add("obfs=relay.example:443,fet=lo")
	f.Fuzz(func(t *testing.T, s string) {
		ep, err := link.ParseEndpoint(s)
		if err != nil {
			return
		}
		pub, sh, err := endpointParams(ep)
		if err != nil {
			return
		}
		if sh2, err := parseShape(sh.String()); err != nil || sh2 != sh || len(pub) != 32 {
			t.Fatalf("shape %v does not round-trip: %v", sh, err)
		}
	})
}
