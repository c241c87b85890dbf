package proxy_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/transport"
	"github.com/ferry-im/ferry/transport/obfs"
	"github.com/ferry-im/ferry/transport/proxy"
	"github.com/ferry-im/ferry/transport/tcp"
	"github.com/ferry-im/ferry/transport/transporttest"
)

// testProxy is a SOCKS5 or HTTP CONNECT proxy on loopback, written for
// these tests from RFC 1928/1929 and RFC 9110: it needs user:pass when
// user is set and refuses targets in deny.
type testProxy struct {
	kind       string
	user, pass string
	ln         net.Listener
	wg         sync.WaitGroup
	mu         sync.Mutex
	conns      []net.Conn
	targets    []string // every target asked for, as the proxy received it
}

func startProxy(t *testing.T, kind, user, pass string) *testProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &testProxy{kind: kind, user: user, pass: pass, ln: ln}
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			p.conns = append(p.conns, c)
			p.mu.Unlock()
			p.wg.Go(func() { p.serve(c) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *testProxy) url() string {
	u := p.kind + "://"
	if p.user != "" {
		u += p.user + ":" + p.pass + "@"
	}
	return u + p.ln.Addr().String()
}

func (p *testProxy) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	var target string
	var ok bool
	if p.kind == "socks5" {
		target, ok = p.socksHandshake(br, c)
	} else {
		target, ok = p.httpHandshake(br, c)
	}
	if !ok {
		return
	}
	p.mu.Lock()
	p.targets = append(p.targets, target)
	p.mu.Unlock()
	up, err := net.Dial("tcp", target)
	if err != nil {
		p.reply(c, false)
		return
	}
	defer up.Close()
	p.reply(c, true)
	p.mu.Lock()
	p.conns = append(p.conns, up)
	p.mu.Unlock()
	go func() { io.Copy(up, br); up.(*net.TCPConn).CloseWrite() }()
	io.Copy(c, up)
}

func (p *testProxy) reply(c net.Conn, ok bool) {
	switch {
	case p.kind == "socks5" && ok:
		c.Write([]byte{5, 0, 0, 1, 127, 0, 0, 1, 0, 0})
	case p.kind == "socks5":
		c.Write([]byte{5, 5, 0, 1, 0, 0, 0, 0, 0, 0}) // connection refused
	case ok:
		io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
	default:
		io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
	}
}

func (p *testProxy) socksHandshake(br *bufio.Reader, c net.Conn) (string, bool) {
	var h [2]byte
	if _, err := io.ReadFull(br, h[:]); err != nil || h[0] != 5 {
		return "", false
	}
	methods := make([]byte, h[1])
	io.ReadFull(br, methods)
	want := byte(0)
	if p.user != "" {
		want = 2
	}
	if !strings.ContainsRune(string(methods), rune(want)) {
		c.Write([]byte{5, 0xff})
		return "", false
	}
	c.Write([]byte{5, want})
	if want == 2 {
		var v [2]byte
		io.ReadFull(br, v[:])
		u := make([]byte, v[1])
		io.ReadFull(br, u)
		var pl [1]byte
		io.ReadFull(br, pl[:])
		pw := make([]byte, pl[0])
		io.ReadFull(br, pw)
		if string(u) != p.user || string(pw) != p.pass {
			c.Write([]byte{1, 1})
			return "", false
		}
		c.Write([]byte{1, 0})
	}
	var req [4]byte
	if _, err := io.ReadFull(br, req[:]); err != nil || req[1] != 1 {
		return "", false
	}
	var host string
	switch req[3] {
	case 1, 4:
		ip := make([]byte, map[byte]int{1: 4, 4: 16}[req[3]])
		io.ReadFull(br, ip)
		host = net.IP(ip).String()
	case 3:
		l, _ := br.ReadByte()
		name := make([]byte, l)
		io.ReadFull(br, name)
		host = string(name)
	}
	var port [2]byte
	io.ReadFull(br, port[:])
	return net.JoinHostPort(host, strconv.Itoa(int(binary.BigEndian.Uint16(port[:])))), true
}

func (p *testProxy) httpHandshake(br *bufio.Reader, c net.Conn) (string, bool) {
	req, err := http.ReadRequest(br)
	if err != nil || req.Method != http.MethodConnect {
		return "", false
	}
	if p.user != "" {
		want := "Basic " + base64.StdEncoding.EncodeToString([]byte(p.user+":"+p.pass))
		if req.Header.Get("Proxy-Authorization") != want {
			io.WriteString(c, "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"t\"\r\nContent-Length: 0\r\n\r\n")
			return "", false
		}
	}
	return req.Host, true
}

var kinds = []struct{ name, user, pass string }{
	{"socks5", "", ""},
	{"socks5", "alice", "s3cret:with@signs"},
	{"http", "", ""},
	{"http", "bob", "pw"},
}

// TestConformance runs the transport suite over tcp and over obfs through
// each proxy kind, with and without authentication.
func TestConformance(t *testing.T) {
	for _, k := range kinds {
		name := k.name
		if k.user != "" {
			name += "-auth"
		}
		t.Run(name+"/tcp", func(t *testing.T) {
			transporttest.Run(t, transporttest.Harness{
				New: func(t *testing.T) (transport.Dialer, net.Listener, link.Endpoint) {
					d := viaProxy(t, startProxy(t, k.name, k.user, k.pass))
					l, ep := transporttest.Serve(t, tcp.Server{})
					return tcp.New(tcp.Config{NetDialer: d}), l, ep
				},
				Unreachable: func(t *testing.T) link.Endpoint {
					return transporttest.Unreachable(t, tcp.Server{}.Endpoint("127.0.0.1:1"))
				},
			})
		})
		t.Run(name+"/obfs", func(t *testing.T) {
			key, _ := obfs.GenerateKey(nil)
			srv, err := obfs.NewServer(obfs.ServerConfig{Key: key, Hold: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			transporttest.Run(t, transporttest.Harness{
				New: func(t *testing.T) (transport.Dialer, net.Listener, link.Endpoint) {
					d := viaProxy(t, startProxy(t, k.name, k.user, k.pass))
					l, ep := transporttest.Serve(t, srv)
					return obfs.New(obfs.Config{NetDialer: d}), l, ep
				},
			})
		})
	}
}

func viaProxy(t *testing.T, p *testProxy) *proxy.Dialer {
	t.Helper()
	d, err := proxy.FromURL(p.url(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestNamesGoToTheProxy checks that a host name reaches the proxy
// unresolved.
func TestNamesGoToTheProxy(t *testing.T) {
	for _, kind := range []string{"socks5", "http"} {
		p := startProxy(t, kind, "", "")
		d := viaProxy(t, p)
		c, err := d.DialContext(context.Background(), "tcp", "localhost:1")
		if err == nil {
			c.Close()
		}
		p.mu.Lock()
		got := append([]string(nil), p.targets...)
		p.mu.Unlock()
		if len(got) != 1 || got[0] != "localhost:1" {
			t.Errorf("%s: proxy was asked for %q, want [localhost:1]", kind, got)
		}
	}
}

// TestErrors checks that each failure is one sentence that says what to
// do, and wraps the error a caller branches on.
func TestErrors(t *testing.T) {
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()
	target := transporttest.Unreachable(t, tcp.Server{}.Endpoint("127.0.0.1:1")).Addr
	tests := []struct {
		name   string
		url    func(t *testing.T) string
		target string
		want   error
		says   string
	}{
		{"socks5 down", func(*testing.T) string { return "socks5://" + closedAddr }, target, proxy.ErrUnreachable, "check that it runs"},
		{"http down", func(*testing.T) string { return "http://" + closedAddr }, target, proxy.ErrUnreachable, "check that it runs"},
		{"socks5 refuses", func(t *testing.T) string { return startProxy(t, "socks5", "", "").url() }, target, proxy.ErrRefused, "connection refused"},
		{"http refuses", func(t *testing.T) string { return startProxy(t, "http", "", "").url() }, target, proxy.ErrRefused, "HTTP 502"},
		{"socks5 wants auth", func(t *testing.T) string {
			return "socks5://" + startProxy(t, "socks5", "u", "p").ln.Addr().String()
		}, target, proxy.ErrAuth, "put them in the proxy URL"},
		{"socks5 wrong password", func(t *testing.T) string {
			return "socks5://u:wrong@" + startProxy(t, "socks5", "u", "p").ln.Addr().String()
		}, target, proxy.ErrAuth, "rejected the username and password"},
		{"http wants auth", func(t *testing.T) string {
			return "http://" + startProxy(t, "http", "u", "p").ln.Addr().String()
		}, target, proxy.ErrAuth, "put them in the proxy URL"},
		{"http wrong password", func(t *testing.T) string {
			return "http://u:wrong@" + startProxy(t, "http", "u", "p").ln.Addr().String()
		}, target, proxy.ErrAuth, "rejected the username and password"},
		{"socks5 scheme on http proxy", func(t *testing.T) string {
			return "socks5://" + startProxy(t, "http", "", "").ln.Addr().String()
		}, target, proxy.ErrProtocol, "check the proxy URL's scheme"},
		{"http scheme on socks5 proxy", func(t *testing.T) string {
			return "http://" + startProxy(t, "socks5", "", "").ln.Addr().String()
		}, target, proxy.ErrProtocol, "check the proxy URL's scheme"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := proxy.ParseURL(tc.url(t))
			if err != nil {
				t.Fatal(err)
			}
			cfg.HandshakeTimeout = 500 * time.Millisecond
			d := proxy.New(cfg, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := d.DialContext(ctx, "tcp", tc.target)
			if err == nil {
				c.Close()
				t.Fatal("dial succeeded")
			}
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("got %q, want one wrapping %v that says %q", err, tc.want, tc.says)
			}
			checkSentence(t, err.Error())
			if strings.Contains(err.Error(), "wrong") {
				t.Fatalf("error shows the password: %q", err)
			}
		})
	}
}

func checkSentence(t *testing.T, msg string) {
	t.Helper()
	if strings.Count(msg, ". ") > 0 || strings.Contains(msg, "\n") {
		t.Errorf("error %q is not one sentence", msg)
	}
}

func TestParseURL(t *testing.T) {
	good := []struct {
		in   string
		want proxy.Config
	}{
		{"socks5://127.0.0.1:9050", proxy.Config{Kind: proxy.SOCKS5, Addr: "127.0.0.1:9050"}},
		{"socks5h://u:p@proxy.example:1080", proxy.Config{Kind: proxy.SOCKS5, Addr: "proxy.example:1080", User: "u", Password: "p"}},
		{"http://[::1]:3128/", proxy.Config{Kind: proxy.HTTP, Addr: "[::1]:3128"}},
		{"http://u%40x:p%3A@h:8080", proxy.Config{Kind: proxy.HTTP, Addr: "h:8080", User: "u@x", Password: "p:"}},
	}
	for _, tc := range good {
		got, err := proxy.ParseURL(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseURL(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "127.0.0.1:1080", "socks4://h:1", "https://h:443", "socks5://h", "socks5://:1080",
		"http://h:0", "http://h:70000", "http://h:80/path", "http://h:80?q", "socks5://" + strings.Repeat("u", 256) + ":p@h:1", "::"} {
		_, err := proxy.ParseURL(bad)
		if err == nil {
			t.Errorf("ParseURL(%q) succeeded", bad)
			continue
		}
		checkSentence(t, err.Error())
		if !strings.Contains(err.Error(), "socks5://") && !strings.Contains(err.Error(), "255 bytes") {
			t.Errorf("ParseURL(%q): %q does not say how to write it", bad, err)
		}
	}
	if s := (proxy.Config{Kind: proxy.SOCKS5, Addr: "h:1", User: "u", Password: "secret"}).String(); strings.Contains(s, "secret") {
		t.Errorf("Config.String shows the password: %s", s)
	}
}
