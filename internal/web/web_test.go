package web

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-im/ferry"
)

// newTestServer is a server over an empty profile (the onboarding), as if
// listening on 127.0.0.1:port.
func newTestServer(t *testing.T) (*Server, http.Handler, string) {
	t.Helper()
	s, err := New(context.Background(), Config{Profile: ferry.Config{Home: filepath.Join(t.TempDir(), "p")}})
	if err != nil {
		t.Fatal(err)
	}
	const port = 48123
	return s, s.Handler(port), "127.0.0.1:48123"
}

func do(h http.Handler, method, target, host string, hdr map[string]string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, strings.NewReader(`{}`))
	r.Host = host
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// TestRefused: requests without the token, with a wrong one, for another
// host name (DNS rebinding) or port, from another origin, and changes
// without an origin are all refused; the right ones pass.
func TestRefused(t *testing.T) {
	s, h, host := newTestServer(t)
	good := map[string]string{"Cookie": "ferry_48123=" + s.Token()}
	with := func(extra map[string]string) map[string]string {
		m := map[string]string{}
		for k, v := range good {
			m[k] = v
		}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	for _, tt := range []struct {
		name, method, target, host string
		hdr                        map[string]string
		want                       int
	}{
		{"no token", "GET", "/api/state", host, nil, 403},
		{"wrong token", "GET", "/api/state", host, map[string]string{"Cookie": "ferry_48123=" + strings.Repeat("A", 43)}, 403},
		{"wrong token in the URL", "GET", "/?t=" + strings.Repeat("A", 43), host, nil, 403},
		{"token of another port", "GET", "/api/state", host, map[string]string{"Cookie": "ferry_48124=" + s.Token()}, 403},
		{"foreign host (DNS rebinding)", "GET", "/api/state", "attacker.example:48123", good, 403},
		{"another port in Host", "GET", "/api/state", "127.0.0.1:48124", good, 403},
		{"foreign origin", "GET", "/api/state", host, with(map[string]string{"Origin": "http://attacker.example"}), 403},
		{"another local origin", "POST", "/api/invite", host, with(map[string]string{"Origin": "http://127.0.0.1:9999", "Content-Type": "application/json"}), 403},
		{"cross-site fetch", "GET", "/api/state", host, with(map[string]string{"Sec-Fetch-Site": "cross-site"}), 403},
		{"same-site fetch from another port", "GET", "/api/state", host, with(map[string]string{"Sec-Fetch-Site": "same-site"}), 403},
		{"change without origin", "POST", "/api/init", host, with(map[string]string{"Content-Type": "application/json"}), 403},
		{"state", "GET", "/api/state", host, good, 200},
		{"localhost", "GET", "/api/state", "localhost:48123", good, 200},
		{"page", "GET", "/", host, good, 200},
		{"same-origin change", "POST", "/api/init", host, with(map[string]string{"Origin": "http://" + host, "Content-Type": "application/json", "Sec-Fetch-Site": "same-origin"}), 400},
		{"change not JSON", "POST", "/api/init", host, with(map[string]string{"Origin": "http://" + host, "Content-Type": "text/plain"}), 415},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := do(h, tt.method, tt.target, tt.host, tt.hdr)
			if w.Code != tt.want {
				t.Fatalf("got %d, want %d: %s", w.Code, tt.want, w.Body.String())
			}
			if got := w.Header().Get("Content-Security-Policy"); got != CSP {
				t.Fatalf("CSP %q", got)
			}
		})
	}
}

// TestTokenExchange: the token in the URL becomes a cookie for this port
// only (HttpOnly, SameSite=Strict), and the URL loses it.
func TestTokenExchange(t *testing.T) {
	s, h, host := newTestServer(t)
	w := do(h, "GET", "/?t="+s.Token(), host, map[string]string{"Sec-Fetch-Site": "none"})
	if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/" {
		t.Fatalf("got %d to %q", w.Code, w.Header().Get("Location"))
	}
	c := w.Result().Cookies()
	if len(c) != 1 || c[0].Name != "ferry_48123" || c[0].Value != s.Token() || !c[0].HttpOnly || c[0].SameSite != http.SameSiteStrictMode {
		t.Fatalf("cookie %+v", c)
	}
}

// TestCSP: the policy lets nothing load from or connect to anywhere but
// this server, and forbids inline scripts and frames.
func TestCSP(t *testing.T) {
	_, h, host := newTestServer(t)
	w := do(h, "GET", "/app.js", host, nil)
	csp := w.Header().Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'", "base-uri 'none'", "form-action 'self'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP lacks %q: %s", want, csp)
		}
	}
	for _, bad := range []string{"unsafe-inline", "unsafe-eval", "http:", "https:", "*"} {
		if strings.Contains(csp, bad) {
			t.Errorf("CSP allows %q: %s", bad, csp)
		}
	}
	for k, v := range map[string]string{"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"} {
		if got := w.Header().Get(k); got != v {
			t.Errorf("%s: got %q, want %q", k, got, v)
		}
	}
}

// TestStaticSelfContained: the page's files, the vendored QR reader
// included, name no other origin (but in comments that load nothing: the
// SVG namespace, and the article jsQR cites for its line drawing).
func TestStaticSelfContained(t *testing.T) {
	for _, name := range []string{"static/index.html", "static/app.js", "static/app.css", "static/vendor/jsQR.js"} {
		b, err := staticFS.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, ref := range []string{"http://", "https://", "//cdn", "@import"} {
			for off := 0; ; {
				i := strings.Index(string(b[off:]), ref)
				if i < 0 {
					break
				}
				i += off
				off = i + len(ref)
				near := string(b[max(0, i-12):min(len(b), i+40)])
				if strings.Contains(near, "www.w3.org/2000/svg") || strings.Contains(near, "variant of http://en.wikipedia.org/wiki/Bresenham") {
					continue
				}
				t.Errorf("%s refers to %q: %q", name, ref, b[max(0, i-20):min(len(b), i+40)])
			}
		}
	}
}

// fakeListener claims an address it does not listen on.
type fakeListener struct{ addr net.Addr }

func (f fakeListener) Accept() (net.Conn, error) { return nil, net.ErrClosed }
func (f fakeListener) Close() error              { return nil }
func (f fakeListener) Addr() net.Addr            { return f.addr }

// TestServeRefusesNonLoopback: Serve will not serve on another address.
func TestServeRefusesNonLoopback(t *testing.T) {
	s, _, _ := newTestServer(t)
	for _, a := range []net.Addr{&net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 80}, &net.TCPAddr{IP: net.IPv4zero, Port: 80}, &net.UnixAddr{Name: "/x"}} {
		if err := s.Serve(context.Background(), fakeListener{a}); err == nil || !strings.Contains(err.Error(), "loopback") {
			t.Errorf("Serve on %v: %v", a, err)
		}
	}
}
