package https

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestProofCheck(t *testing.T) {
	k := deriveKeys(testSecret)
	now := time.Unix(1_800_000_000, 0)
	nonce := [nonceLen]byte{9}
	valid, err := ParseProof(k.proof(now, nonce))
	if err != nil {
		t.Fatal(err)
	}
	other := deriveKeys(Secret{42})
	otherProof, _ := ParseProof(other.proof(now, nonce))
	flipped := valid
	flipped.Tag[0] ^= 1
	later := valid
	later.Time++
	tests := []struct {
		name string
		p    Proof
		now  time.Time
		want error
	}{
		{"valid", valid, now, nil},
		{"clock ahead within skew", valid, now.Add(9 * time.Minute), nil},
		{"clock behind within skew", valid, now.Add(-9 * time.Minute), nil},
		{"too old", valid, now.Add(11 * time.Minute), errProofTime},
		{"from the future", valid, now.Add(-11 * time.Minute), errProofTime},
		{"other secret", otherProof, now, errProofTag},
		{"tag changed", flipped, now, errProofTag},
		{"time changed", later, now, errProofTag},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := k.check(tc.p, tc.now, DefaultMaxClockSkew); !errors.Is(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
	if k.path == other.path || len(k.path) != 17 || k.path[0] != '/' {
		t.Errorf("paths %q and %q: want distinct, a slash and 16 characters", k.path, other.path)
	}
}

func TestReplayFilter(t *testing.T) {
	f := newReplayFilter(2)
	now := time.Unix(1000, 0)
	a, b, c := [nonceLen]byte{1}, [nonceLen]byte{2}, [nonceLen]byte{3}
	if err := f.add(a, now.Add(time.Minute), now); err != nil {
		t.Fatal(err)
	}
	if err := f.add(a, now.Add(time.Minute), now); !errors.Is(err, errProofReplay) {
		t.Fatalf("second add of a nonce: got %v, want %v", err, errProofReplay)
	}
	if err := f.add(b, now.Add(2*time.Minute), now); err != nil {
		t.Fatal(err)
	}
	if err := f.add(c, now.Add(time.Minute), now); !errors.Is(err, errReplayFilled) {
		t.Fatalf("add to a full filter: got %v, want %v", err, errReplayFilled)
	}
	// Once a's proof has expired, its room is free; a is forgotten, which
	// is safe since its time no longer checks.
	now = now.Add(90 * time.Second)
	if err := f.add(c, now.Add(time.Minute), now); err != nil {
		t.Fatalf("add after expiry: %v", err)
	}
	if err := f.add(b, now.Add(time.Minute), now); !errors.Is(err, errProofReplay) {
		t.Fatalf("b is still remembered: got %v", err)
	}
}

// FuzzParseProof: parsing never panics, and a proof that parses marshals
// back to the same text.
func FuzzParseProof(f *testing.F) {
	k := deriveKeys(testSecret)
	f.Add(k.proof(time.Unix(1_800_000_000, 0), [nonceLen]byte{1, 2, 3}))
	f.Add(strings.Repeat("A", 54))
	f.Add("")
	f.Add(strings.Repeat("_", 55))
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseProof(s)
		if err != nil {
			return
		}
		if got := p.Marshal(); got != s {
			t.Fatalf("ParseProof(%q).Marshal() = %q", s, got)
		}
		k.check(p, time.Now(), DefaultMaxClockSkew)
	})
}

// roundTrip sends a GET for path with cookie (if any) over HTTP/2 with
// net/http (an honest-looking client that is not Ferry's) and returns the
// response; the caller closes its body.
func roundTrip(t *testing.T, addr, path, cookie string) *http.Response {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, ServerName: "www.example.com"}, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+path, nil)
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// upgradeRequest sends roundTrip's request and returns the response's
// status and body.
func upgradeRequest(t *testing.T, addr, path, cookie string) (int, string) {
	t.Helper()
	resp := roundTrip(t, addr, path, cookie)
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b)
}

// TestWithoutProofTheWebsite: the secret path without a proof, with a bad
// one, and with a replayed one gets the website's answer (its 404), and a
// proof made with another secret makes the client's Read fail with
// ErrRefused.
func TestWithoutProofTheWebsite(t *testing.T) {
	now := time.Now() // fixed for the proofs; near enough for the certificate
	ln, ep := testRelay(t, ServerConfig{Now: func() time.Time { return now }})
	closeAccepted(ln)
	k := deriveKeys(testSecret)
	valid := cookieName + "=" + k.proof(now, [nonceLen]byte{7})
	wantStatus, wantBody := upgradeRequest(t, ep.Addr, "/no-such-page", "")
	if wantStatus != http.StatusNotFound {
		t.Fatalf("the website's answer to a missing page: %d", wantStatus)
	}
	for _, tc := range []struct{ name, cookie string }{
		{"no cookie", ""},
		{"garbage", cookieName + "=garbage"},
		{"stale", cookieName + "=" + k.proof(now.Add(-time.Hour), [nonceLen]byte{8})},
		{"other secret", cookieName + "=" + deriveKeys(Secret{9}).proof(now, [nonceLen]byte{7})},
	} {
		if status, body := upgradeRequest(t, ep.Addr, k.path, tc.cookie); status != wantStatus || body != wantBody {
			t.Errorf("%s: got %d %q, want the website's %d %q", tc.name, status, body, wantStatus, wantBody)
		}
	}
	// A valid proof opens a tunnel (the 200 and the first padding frame
	// arrive); the same request replayed gets the website.
	// (The tunnel never ends: only its headers are read.)
	if resp := roundTrip(t, ep.Addr, k.path, valid); resp.StatusCode != http.StatusOK {
		t.Fatalf("valid proof: status %d, want 200", resp.StatusCode)
	} else {
		resp.Body.Close()
	}
	if status, body := upgradeRequest(t, ep.Addr, k.path, valid); status != wantStatus || body != wantBody {
		t.Errorf("replay: got %d %q, want the website's %d", status, body, wantStatus)
	}

	target, err := TargetOf(ep)
	if err != nil {
		t.Fatal(err)
	}
	target.Secret = Secret{9}
	c, err := New(Config{Now: func() time.Time { return now }}).Dial(t.Context(), target)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, ErrRefused) {
		t.Fatalf("Read through a refused upgrade: got %v, want ErrRefused", err)
	}
}
