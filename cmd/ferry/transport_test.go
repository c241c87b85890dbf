package main

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
)

// connectProxy is an HTTP CONNECT proxy on loopback that counts the
// tunnels it opened.
func connectProxy(t *testing.T) (addr string, tunnels *atomic.Int32) {
	t.Helper()
	tunnels = new(atomic.Int32)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			http.Error(w, "CONNECT only", http.StatusMethodNotAllowed)
			return
		}
		up, err := net.Dial("tcp", r.Host)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		w.WriteHeader(http.StatusOK)
		c, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			up.Close()
			return
		}
		tunnels.Add(1)
		go func() { io.Copy(up, buf); up.Close() }()
		io.Copy(c, up)
		c.Close()
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), tunnels
}

type statusJSON struct {
	Online    bool   `json:"online"`
	Transport string `json:"transport"`
	Why       string `json:"why"`
	Queued    int    `json:"queued"`
	Error     string `json:"error"`
}

func (u *user) status(args ...string) statusJSON {
	u.t.Helper()
	out, errs, code := u.run("", append(args, "status", "--json")...)
	var s statusJSON
	if code != exitOK || json.Unmarshal([]byte(out), &s) != nil {
		u.t.Fatalf("ferry status --json: exit %d, %q, %q", code, out, errs)
	}
	return s
}

// TestE2EStatusAndProxy: ferry status says over which transport the
// client reached its relay; ferry proxy keeps an upstream proxy in the
// profile that every connection then goes through; --proxy overrides it,
// and bad proxies give one sentence that says what to do.
func TestE2EStatusAndProxy(t *testing.T) {
	r := startRelay(t)
	alice := newUser(t, r, "alice")
	if s := alice.status(); !s.Online || s.Transport != "tcp" || s.Queued != 0 {
		t.Fatalf("status: %+v, want online over tcp, nothing queued", s)
	}
	if out := alice.must("status"); !strings.Contains(out, "connected over tcp to "+r.addr) {
		t.Fatalf("status printed %q", out)
	}
	if out := alice.must("proxy"); !strings.Contains(out, "no proxy") {
		t.Fatalf("proxy printed %q", out)
	}
	addr, tunnels := connectProxy(t)
	if out := alice.must("proxy", "http://"+addr); !strings.Contains(out, "every transport now goes through http://"+addr) {
		t.Fatalf("proxy URL printed %q", out)
	}
	if s := alice.status(); !s.Online || tunnels.Load() == 0 {
		t.Fatalf("status through the profile's proxy: %+v, %d tunnels", s, tunnels.Load())
	}
	closed := freeAddr(t)
	s := alice.status("--proxy", "socks5://"+closed)
	if s.Online || !strings.Contains(s.Error, "cannot reach the proxy socks5://"+closed) {
		t.Fatalf("status through a dead --proxy: %+v", s)
	}
	_, errs, code := alice.run("", "--proxy", "socks4://"+closed, "status")
	if code == exitOK || strings.Count(strings.TrimSpace(errs), "\n") > 0 || !strings.Contains(errs, "write it as socks5://") {
		t.Fatalf("--proxy socks4://: exit %d, %q; want one sentence saying how to write it", code, errs)
	}
	before := tunnels.Load()
	if s := alice.status("--proxy", "off"); !s.Online || tunnels.Load() != before {
		t.Fatalf("--proxy off: %+v, tunnels %d then %d", s, before, tunnels.Load())
	}
	alice.must("proxy", "off")
	if out := alice.must("proxy"); !strings.Contains(out, "no proxy") {
		t.Fatalf("proxy after off printed %q", out)
	}
}
