package obfs_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/ferry-im/ferry/transport/obfs"
	"github.com/ferry-im/ferry/transport/transporttest"
)

func dialPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	l, ep := transporttest.Serve(t, newServer(t, time.Second))
	acc := make(chan net.Conn, 1)
	go func() {
		s, err := l.Accept()
		if err == nil {
			acc <- s
		}
	}()
	c, err := obfs.New(obfs.Config{}).DialContext(context.Background(), ep)
	if err != nil {
		t.Fatal(err)
	}
	s := <-acc
	t.Cleanup(func() { c.Close(); s.Close() })
	return c, s
}

// TestStreamIntactAfterWriteDeadline fills the pipe until a write
// deadline cuts a write, then checks that the peer reads exactly the bytes
// reported written, in order, followed by what is written next.
func TestStreamIntactAfterWriteDeadline(t *testing.T) {
	c, s := dialPair(t)
	var sent bytes.Buffer
	chunk := make([]byte, 100_000)
	c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	for i := 0; ; i++ {
		for j := range chunk {
			chunk[j] = byte(i + j/7)
		}
		n, err := c.Write(chunk)
		sent.Write(chunk[:n])
		if err != nil {
			break
		}
		if i > 10000 {
			t.Fatal("write deadline never hit")
		}
	}
	c.SetWriteDeadline(time.Time{})
	tail := []byte("after the deadline")
	sent.Write(tail)
	go c.Write(tail)
	got := make([]byte, sent.Len())
	s.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.ReadFull(s, got); err != nil {
		t.Fatalf("read %d bytes: %v", len(got), err)
	}
	if !bytes.Equal(got, sent.Bytes()) {
		t.Fatal("stream after a cut write differs from what Write reported written")
	}
}

// TestTamperedFrameFails flips a bit on the wire: the reader fails rather
// than return changed bytes.
func TestTamperedFrameFails(t *testing.T) {
	l, ep := transporttest.Serve(t, newServer(t, time.Second))
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	// A man in the middle that flips one bit of byte 1300 upstream (after
	// the hello, which is at most 1200 bytes).
	upstream := ep.Addr
	go func() {
		down, err := raw.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", upstream)
		if err != nil {
			return
		}
		go io.Copy(down, up)
		buf := make([]byte, 1)
		for n := 0; ; n++ {
			if _, err := down.Read(buf); err != nil {
				up.Close()
				return
			}
			if n == 1300 {
				buf[0] ^= 1
			}
			up.Write(buf)
		}
	}()
	acc := make(chan net.Conn, 1)
	go func() {
		s, err := l.Accept()
		if err == nil {
			acc <- s
		}
	}()
	ep.Addr = raw.Addr().String()
	c, err := obfs.New(obfs.Config{}).DialContext(context.Background(), ep)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(bytes.Repeat([]byte("a"), 4000))
	s := <-acc
	defer s.Close()
	s.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(s)
	if err == nil || bytes.ContainsFunc(got, func(r rune) bool { return r != 'a' }) {
		t.Fatalf("read %d bytes after tampering, err %v; want an error and no changed bytes", len(got), err)
	}
}
