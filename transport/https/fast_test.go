package https

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// TestGoSettings: net/http's HTTP/2 server still opens with goSettings,
// the frame the relay sends for it before it knows whether a connection
// is a tunnel (fast.go).
func TestGoSettings(t *testing.T) {
	a, b := net.Pipe()
	hs := NewHTTPServer(BuiltinSite(), nil)
	hs.Protocols = new(http.Protocols)
	hs.Protocols.SetUnencryptedHTTP2(true)
	l := newChanListener(a.LocalAddr())
	done := make(chan struct{})
	go func() { defer close(done); hs.Serve(l) }()
	defer func() { hs.Close(); <-done }()
	l.conns <- b
	go a.Write([]byte(http2.ClientPreface))
	a.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, len(goSettings))
	if _, err := io.ReadFull(a, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, goSettings) {
		t.Fatalf("net/http opens with %x, goSettings is %x: update goSettings", got, goSettings)
	}
	a.Close()
}

// TestHandedConnSwallows: net/http's copy of the SETTINGS frame the relay
// sent is dropped however net/http's writes are cut, and nothing else is.
func TestHandedConnSwallows(t *testing.T) {
	for _, cut := range []int{1, 7, len(goSettings), len(goSettings) + 5} {
		c := &handedConn{swallow: bytes.Clone(goSettings)}
		out := append(bytes.Clone(goSettings), "after"...)
		var got []byte
		for len(out) > 0 {
			n := min(cut, len(out))
			if m, err := c.writeTo(out[:n], func(p []byte) (int, error) { got = append(got, p...); return len(p), nil }); err != nil || m != n {
				t.Fatalf("cut %d: wrote %d of %d: %v", cut, m, n, err)
			}
			out = out[n:]
		}
		if string(got) != "after" {
			t.Errorf("cut %d: passed %q, want %q", cut, got, "after")
		}
	}
}
