package https

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The direct (TLS) listener's tunnel path. The relay does what net/http's
// HTTPS server does with a new connection up to the first request: the
// TLS handshake (with its deadline and its answer to plain HTTP), and for
// HTTP/2 the server's SETTINGS frame at once. It then reads the client's
// first flight (Chromium sends the preface, SETTINGS, WINDOW_UPDATE and
// the request's HEADERS together). A request that proves the secret
// becomes a tunnel served by the relay's own single-stream HTTP/2 (one
// goroutine, no net/http buffers); every other connection goes, with the
// bytes read from it, to the same net/http server as everything else,
// which then writes exactly what it would have (its SETTINGS frame, sent
// already, is dropped from its output). TestGoSettings fails when Go's
// first frame changes.

// goSettings is the SETTINGS frame net/http's HTTP/2 server sends first:
// MAX_FRAME_SIZE 1048576, MAX_CONCURRENT_STREAMS 250, MAX_HEADER_LIST_SIZE
// 1048896, HEADER_TABLE_SIZE 4096, INITIAL_WINDOW_SIZE 1048576.
var goSettings = mustHex("00001e0400000000000005001000000003000000fa000600100140000100001000000400100000")

const (
	goWindow       = 1 << 20          // net/http's stream and connection receive windows
	prefaceTimeout = 10 * time.Second // how long net/http waits for the HTTP/2 preface
	peekQuiet      = 100 * time.Millisecond
	maxPeek        = 64 << 10
)

// serverRole is the relay's end of a tunnel: the windows and frame size
// goSettings advertises.
var serverRole = h2role{server: true, recvStream: goWindow, recvConn: goWindow, maxRead: 1 << 20}

// chanListener is a net.Listener of the conns sent on conns.
type chanListener struct {
	conns chan net.Conn
	done  chan struct{}
	addr  net.Addr
	once  sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{conns: make(chan net.Conn), done: make(chan struct{}), addr: addr}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *chanListener) Addr() net.Addr { return l.addr }

// handedConn is a TLS connection handed to net/http after the relay read
// from and wrote to it: Read returns replay first, and Write drops
// net/http's copy of what the relay already sent (swallow).
//
// It is not a *tls.Conn and has no ConnectionState, so net/http serves it
// as cleartext: HTTP/1.1, or HTTP/2 with prior knowledge after the preface.
type handedConn struct {
	tc      *tls.Conn
	replay  []byte
	wmu     sync.Mutex // wmu protects swallow
	swallow []byte
}

func (c *handedConn) Read(p []byte) (int, error) {
	if len(c.replay) > 0 {
		n := copy(p, c.replay)
		c.replay = c.replay[n:]
		return n, nil
	}
	return c.tc.Read(p)
}

func (c *handedConn) Write(p []byte) (int, error) { return c.writeTo(p, c.tc.Write) }

// writeTo is Write with the TLS write injected.
func (c *handedConn) writeTo(p []byte, write func([]byte) (int, error)) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	n := 0
	for len(c.swallow) > 0 && n < len(p) && p[n] == c.swallow[0] {
		c.swallow = c.swallow[1:]
		n++
	}
	if n == len(p) {
		return n, nil // the rest of the swallow may come in the next write
	}
	c.swallow = nil // anything else: write it all
	m, err := write(p[n:])
	return n + m, err
}

func (c *handedConn) Close() error                       { return c.tc.Close() }
func (c *handedConn) CloseWrite() error                  { return c.tc.CloseWrite() }
func (c *handedConn) LocalAddr() net.Addr                { return c.tc.LocalAddr() }
func (c *handedConn) RemoteAddr() net.Addr               { return c.tc.RemoteAddr() }
func (c *handedConn) SetDeadline(t time.Time) error      { return c.tc.SetDeadline(t) }
func (c *handedConn) SetReadDeadline(t time.Time) error  { return c.tc.SetReadDeadline(t) }
func (c *handedConn) SetWriteDeadline(t time.Time) error { return c.tc.SetWriteDeadline(t) }

// acceptRaw serves each raw connection of l on a goroutine of its own.
func (ln *listener) acceptRaw(l net.Listener) {
	backoff := 5 * time.Millisecond
	for {
		raw, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			select {
			case <-ln.done:
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		if !ln.track(raw) {
			raw.Close()
			return
		}
		ln.wg.Go(func() {
			defer ln.untrack(raw)
			ln.serveRaw(raw)
		})
	}
}

// track records a raw conn being set up, so Close can end it; it reports
// false once the listener is closing.
func (ln *listener) track(c net.Conn) bool {
	ln.mu.Lock()
	defer ln.mu.Unlock()
	if ln.closing {
		return false
	}
	ln.setup[c] = struct{}{}
	return true
}

func (ln *listener) untrack(c net.Conn) {
	ln.mu.Lock()
	delete(ln.setup, c)
	ln.mu.Unlock()
}

// serveRaw sets up one raw connection as net/http's HTTPS server would,
// up to its first request, then opens a tunnel or hands it over.
func (ln *listener) serveRaw(raw net.Conn) {
	bc := &batchConn{Conn: raw}
	tc := tls.Server(bc, ln.tlsConfig)
	raw.SetDeadline(time.Now().Add(ReadHeaderTimeout)) // net/http's TLS handshake timeout here
	if err := tc.Handshake(); err != nil {
		// net/http's answer to a client speaking plain HTTP.
		if re, ok := err.(tls.RecordHeaderError); ok && re.Conn != nil && looksLikeHTTP(re.RecordHeader) {
			io.WriteString(re.Conn, "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
			re.Conn.Close()
		}
		tc.Close()
		return
	}
	raw.SetDeadline(time.Time{})
	if tc.ConnectionState().NegotiatedProtocol != "h2" {
		ln.handOver(&handedConn{tc: tc})
		return
	}
	if _, err := tc.Write(goSettings); err != nil {
		tc.Close()
		return
	}
	first, req, err := peekRequest(tc)
	if len(first) == 0 && err != nil {
		tc.Close() // as net/http when the preface does not come
		return
	}
	if req != nil && ln.s.authorized(req) {
		ln.openTunnel(tc, bc, first, req)
		return
	}
	ln.handOver(&handedConn{tc: tc, replay: first, swallow: goSettings})
}

// looksLikeHTTP is net/http's test of a failed TLS record header.
func looksLikeHTTP(hdr [5]byte) bool {
	switch string(hdr[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		return true
	}
	return false
}

// handOver gives c to the net/http server.
func (ln *listener) handOver(c *handedConn) {
	select {
	case ln.handover.conns <- c:
	case <-ln.handover.done:
		c.Close()
	}
}

// peekRequest reads the client's first flight: the preface and frames up
// to the first HEADERS. It returns the bytes read and, if they hold a
// whole first request, that request. It waits prefaceTimeout for the
// first bytes and peekQuiet for each further read.
func peekRequest(tc *tls.Conn) ([]byte, *http.Request, error) {
	defer tc.SetReadDeadline(time.Time{})
	var buf []byte
	tmp := make([]byte, 4096)
	wait := prefaceTimeout
	for len(buf) < maxPeek {
		tc.SetReadDeadline(time.Now().Add(wait))
		n, err := tc.Read(tmp)
		buf = append(buf, tmp[:n]...)
		req, complete := parseFirstRequest(buf)
		if complete || err != nil {
			return buf, req, err
		}
		wait = peekQuiet
	}
	return buf, nil, nil
}

// parseFirstRequest parses the preface and frames in b up to the first
// HEADERS. complete is false while b could still become a first request.
func parseFirstRequest(b []byte) (req *http.Request, complete bool) {
	preface := []byte(http2.ClientPreface)
	if len(b) < len(preface) {
		return nil, !bytes.HasPrefix(preface, b)
	}
	if !bytes.HasPrefix(b, preface) {
		return nil, true
	}
	fr := http2.NewFramer(io.Discard, bytes.NewReader(b[len(preface):]))
	fr.SetMaxReadFrameSize(serverRole.maxRead)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.MaxHeaderListSize = 1 << 20
	for {
		f, err := fr.ReadFrame()
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, false
		}
		if err != nil {
			return nil, true
		}
		mh, ok := f.(*http2.MetaHeadersFrame)
		if !ok {
			continue
		}
		u, err := url.ParseRequestURI(mh.PseudoValue("path"))
		if err != nil || mh.StreamID != tunnelStream {
			return nil, true
		}
		h := make(http.Header)
		for _, hf := range mh.RegularFields() {
			h.Add(hf.Name, hf.Value)
		}
		return &http.Request{Method: mh.PseudoValue("method"), URL: u, Header: h}, true
	}
}

// openTunnel serves an authorized first request as a tunnel: the rest of
// net/http's opening (its connection WINDOW_UPDATE), the 200 response, and
// the stream as a conn for Accept.
func (ln *listener) openTunnel(tc *tls.Conn, bc *batchConn, first []byte, req *http.Request) {
	rd := io.MultiReader(bytes.NewReader(first[len(http2.ClientPreface):]), tc)
	h := newH2ConnRole(tc, rd, serverRole)
	h.batch = bc
	seed, err := ln.s.seed()
	if err == nil {
		err = h.startServer(ln.s.now())
	}
	if err != nil {
		h.Close()
		return
	}
	shaped := newShapedConn(h, false, seed, frames(ln.s.unshaped))
	if shaped.writePage() != nil {
		h.Close()
		return
	}
	select {
	case ln.conns <- shaped:
		if l := ln.s.cfg.Logger; l != nil {
			l.Debug("https tunnel opened", "remote", tc.RemoteAddr().String(), "proto", "HTTP/2.0")
		}
	case <-ln.done:
		h.Close()
	}
}
