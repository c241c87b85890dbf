package https

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/ferry-im/ferry/censor/censortest"
)

// writesConn records each Write it is given and passes it on to Conn (if
// any), or fails it with err.
type writesConn struct {
	net.Conn
	mu     sync.Mutex
	writes [][]byte
	err    error
}

func (c *writesConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	c.writes = append(c.writes, bytes.Clone(p))
	if c.Conn == nil {
		return len(p), nil
	}
	return c.Conn.Write(p)
}

func TestBatchConn(t *testing.T) {
	raw := &writesConn{}
	c := &batchConn{Conn: raw}
	c.Write([]byte("hello"))
	if len(raw.writes) != 1 {
		t.Fatalf("outside a batch: got %d writes, want 1", len(raw.writes))
	}
	c.start()
	for _, s := range []string{"one", "two", "three"} {
		if n, err := c.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", s, n, err)
		}
	}
	if len(raw.writes) != 1 {
		t.Fatalf("before flush: got %d writes, want 1", len(raw.writes))
	}
	if err := c.flush(); err != nil {
		t.Fatal(err)
	}
	if len(raw.writes) != 2 || string(raw.writes[1]) != "onetwothree" {
		t.Fatalf("after flush: got writes %q, want [hello onetwothree]", raw.writes)
	}

	raw.err = errors.New("broken")
	c.start()
	c.Write([]byte("lost"))
	if err := c.flush(); !errors.Is(err, raw.err) {
		t.Fatalf("flush on a broken conn: got %v, want %v", err, raw.err)
	}
	raw.err = nil
	if _, err := c.Write([]byte("after")); err == nil {
		t.Fatal("a write after a failed flush succeeded, want the flush's error (TLS's records are out of step)")
	}
}

// TestTunnelWriteIsOneSyscall: each 64 KiB of a tunnel's Write reaches
// the connection under TLS in one write, four TLS records of DATA frames.
func TestTunnelWriteIsOneSyscall(t *testing.T) {
	cliRaw, srvRaw := net.Pipe()
	raw := &writesConn{Conn: cliRaw}
	bc := &batchConn{Conn: raw}
	cert := censortest.ExampleComCert(t)
	srv := tls.Server(srvRaw, &tls.Config{Certificates: []tls.Certificate{cert}, SessionTicketsDisabled: true}) // no reader on the client
	cli := tls.Client(bc, &tls.Config{InsecureSkipVerify: true, DynamicRecordSizingDisabled: true})             // as the client's uTLS
	defer cli.Close()
	defer srv.Close()
	got := make(chan []byte, 1)
	go func() {
		var b []byte
		fr := http2.NewFramer(nil, srv)
		fr.SetMaxReadFrameSize(1 << 20)
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				got <- b
				return
			}
			if d, ok := f.(*http2.DataFrame); ok {
				b = append(b, d.Data()...)
			}
		}
	}()
	if err := cli.Handshake(); err != nil {
		t.Fatal(err)
	}
	raw.mu.Lock()
	raw.writes = nil
	raw.mu.Unlock()

	c := newH2ConnRole(cli, bytes.NewReader(nil), clientRole)
	c.batch = bc
	c.connSend, c.strmSend, c.maxFrame = 1<<20, 1<<20, 1<<20
	data := bytes.Repeat([]byte("ferry"), 40000)
	if n, err := c.Write(data); n != len(data) || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	cli.Close()
	if b := <-got; !bytes.Equal(b, data) {
		t.Fatalf("the server read %d bytes of DATA, want the %d written", len(b), len(data))
	}
	raw.mu.Lock()
	defer raw.mu.Unlock()
	writes := raw.writes[:len(raw.writes)-1] // the last: TLS's close_notify
	if want := (len(data) + sendFrame - 1) / sendFrame; len(writes) != want {
		t.Errorf("got %d writes, want %d (one per %d bytes of frames)", len(writes), want, sendBatch)
	}
	for i, w := range writes[:len(writes)-1] {
		if want := 4 * (5 + 16384 + 1 + 16); len(w) != want {
			t.Errorf("write %d: %d bytes, want %d (four full TLS 1.3 records)", i, len(w), want)
		}
	}
}

// TestReadFramesBothPaths: DATA frames of the tunnel stream are read
// straight into chunks, every other frame by the framer; interleaved,
// the stream reads back exactly its data, and the framer's frames are
// answered.
func TestReadFramesBothPaths(t *testing.T) {
	var in writeBuffer
	fr := http2.NewFramer(&in, nil)
	var want []byte
	data := func(stream uint32, end bool, b []byte, pad []byte) {
		if pad != nil {
			fr.WriteDataPadded(stream, end, b, pad)
		} else {
			fr.WriteData(stream, end, b)
		}
		if stream == tunnelStream {
			want = append(want, b...)
		}
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 4000) // 64,000 bytes: four chunks
	data(1, false, []byte("first"), nil)
	data(1, false, big, nil)
	data(1, false, []byte("padded"), make([]byte, 40))
	fr.WritePing(false, [8]byte{7})
	data(3, false, []byte("another stream"), nil)
	data(1, false, nil, nil)
	fr.WriteWindowUpdate(0, 1000)
	data(1, false, big[:16384], nil)
	data(1, true, []byte("last"), nil)

	tc, peer := net.Pipe()
	defer peer.Close()
	acks := make(chan [8]byte, 1)
	go func() {
		pfr := http2.NewFramer(nil, peer)
		for {
			f, err := pfr.ReadFrame()
			if err != nil {
				return
			}
			if p, ok := f.(*http2.PingFrame); ok && p.IsAck() {
				acks <- p.Data
			}
		}
	}()
	c := newH2ConnRole(tc, bytes.NewReader(in), serverRole)
	if err := c.startServer(time.Now()); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(time.Minute))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, want the %d of stream 1", len(got), len(want))
	}
	select {
	case d := <-acks:
		if d != [8]byte{7} {
			t.Errorf("PING ack carries %v, want the PING's data", d)
		}
	case <-time.After(time.Minute):
		t.Error("the PING was not answered")
	}
}
