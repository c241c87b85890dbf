package https

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/ferry-im/ferry/censor"
	"github.com/ferry-im/ferry/censor/censortest"
)

// captureServer is an HTTPS server (HTTP/2, a page for every request)
// that records, per connection, the client's ClientHello as sent and the
// client's first bytes after the handshake, decrypted.
type captureServer struct {
	ln   net.Listener
	pin  []byte     // of its certificate
	mu   sync.Mutex // mu protects caps
	caps []*capture
}

type capture struct {
	mu    sync.Mutex // mu protects the buffers, written while the conn is served
	raw   bytes.Buffer
	plain bytes.Buffer
}

func (c *capture) hello() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.raw.Bytes())
}

func (c *capture) h2() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.plain.Bytes())
}

// teeConn copies what it reads into buf.
type teeConn struct {
	net.Conn
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (c teeConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.buf.Write(p[:n])
	c.mu.Unlock()
	return n, err
}

func startCaptureServer(t *testing.T) (string, *captureServer) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cert := censortest.ExampleComCert(t)
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	cs := &captureServer{ln: ln, pin: Pin(leaf)}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}
	page := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, "<!doctype html><title>capture</title><p>captured</p>")
	})
	// The decrypted conns go to a net/http server speaking HTTP/2 with
	// prior knowledge (they carry the client's preface).
	plain := newChanListener(ln.Addr())
	hs := &http.Server{Handler: page, Protocols: new(http.Protocols)}
	hs.Protocols.SetUnencryptedHTTP2(true)
	var wg sync.WaitGroup
	var conns sync.Map
	wg.Go(func() { hs.Serve(plain) })
	wg.Go(func() {
		for {
			raw, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Store(raw, true)
			c := new(capture)
			cs.mu.Lock()
			cs.caps = append(cs.caps, c)
			cs.mu.Unlock()
			wg.Go(func() {
				tc := tls.Server(teeConn{raw, &c.mu, &c.raw}, cfg)
				if tc.Handshake() != nil {
					raw.Close()
					return
				}
				select {
				case plain.conns <- teeConn{tc, &c.mu, &c.plain}:
				case <-plain.done:
					raw.Close()
				}
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		plain.Close()
		hs.Close()
		conns.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
		wg.Wait()
	})
	return ln.Addr().String(), cs
}

// captures returns the connections' captures that carried a ClientHello.
func (cs *captureServer) captures() []*capture {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	var out []*capture
	for _, c := range cs.caps {
		if len(c.hello()) > 0 {
			out = append(out, c)
		}
	}
	return out
}

// parseHello parses the ClientHello at the start of a capture.
func parseHello(t *testing.T, b []byte) *censor.ClientHello {
	t.Helper()
	h, err := censor.ParseClientHello(b)
	if err != nil {
		t.Fatalf("parse client hello: %v", err)
	}
	return h
}

// h2Opening is what a client sends first on an HTTP/2 connection, up to
// and including its first HEADERS frame.
type h2Opening struct {
	settings     []http2.Setting
	windowUpdate uint32 // of the connection, 0 if none came first
	flags        http2.Flags
	priority     http2.PriorityParam
	block        []byte // the HPACK header block
	fields       []hpack.HeaderField
	frames       []string // frame types in order
}

func parseH2Opening(b []byte) (*h2Opening, error) {
	if !bytes.HasPrefix(b, []byte(http2.ClientPreface)) {
		return nil, errors.New("no HTTP/2 connection preface")
	}
	fr := http2.NewFramer(io.Discard, bytes.NewReader(b[len(http2.ClientPreface):]))
	o := new(h2Opening)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return nil, fmt.Errorf("read frames before HEADERS: %w", err)
		}
		o.frames = append(o.frames, f.Header().Type.String())
		switch f := f.(type) {
		case *http2.SettingsFrame:
			f.ForeachSetting(func(s http2.Setting) error { o.settings = append(o.settings, s); return nil })
		case *http2.WindowUpdateFrame:
			if f.StreamID == 0 {
				o.windowUpdate = f.Increment
			}
		case *http2.HeadersFrame:
			o.flags, o.priority = f.Flags, f.Priority
			o.block = slices.Clone(f.HeaderBlockFragment())
			fields, err := hpack.NewDecoder(65536, nil).DecodeFull(o.block)
			if err != nil {
				return nil, fmt.Errorf("decode headers: %w", err)
			}
			o.fields = fields
			return o, nil
		}
	}
}
