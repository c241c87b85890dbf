package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/transport/https"
)

// TestHTTPSBinary: ferry-relay --listen https puts a pinned, keyed https
// endpoint first in its link, `ferry-relay link` prints it again, a
// client's channel handshake goes through it, and a restart keeps the
// secret and the certificate.
func TestHTTPSBinary(t *testing.T) {
	bin := buildRelay(t)
	dir := t.TempDir()
	args := []string{"--data", dir, "--listen", "https=127.0.0.1:0", "--listen", "tcp=127.0.0.1:0", "--https-sni", "www.example.com"}
	r := startRelay(t, bin, args...)
	ep := r.link.Endpoints[0]
	if ep.Transport != https.Name {
		t.Fatalf("first endpoint %s, want https", ep)
	}
	for _, k := range []string{https.ParamSNI, https.ParamPin, https.ParamKey} {
		if _, ok := ep.Param(k); !ok {
			t.Errorf("https endpoint %s lacks %s", ep, k)
		}
	}
	if sni, _ := ep.Param(https.ParamSNI); sni != "www.example.com" {
		t.Errorf("sni = %q, want www.example.com", sni)
	}
	out, err := exec.Command(bin, "link", "--data", dir).Output()
	if err != nil {
		t.Fatalf("ferry-relay link: %v", err)
	}
	if got := strings.TrimSpace(string(out)); got != r.link.String() {
		t.Fatalf("ferry-relay link printed %q, want %q", got, r.link.String())
	}
	handshakeHTTPS(t, r.link)
	if fi, err := os.Stat(filepath.Join(dir, httpsSecretFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("https secret file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	r.cmd.Process.Kill()
	<-r.exited
	r.exited <- nil
	again := startRelay(t, bin, args...)
	for _, k := range []string{https.ParamPin, https.ParamKey} {
		a, _ := ep.Param(k)
		b, _ := again.link.Endpoints[0].Param(k)
		if a != b {
			t.Errorf("%s changed across a restart: %s, then %s", k, a, b)
		}
	}
	handshakeHTTPS(t, again.link)
}

// handshakeHTTPS makes a channel handshake with the relay through its
// first (https) endpoint.
func handshakeHTTPS(t *testing.T, r link.Relay) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	nc, err := https.New(https.Config{}).DialContext(ctx, r.Endpoints[0])
	if err != nil {
		t.Fatal(err)
	}
	ch, err := channel.Client(ctx, nc, mustKeyPair(t), r.Key)
	if err != nil {
		t.Fatalf("channel handshake through https: %v", err)
	}
	ch.Close()
}

// serverOf builds the https relay half from flags, as ferry-relay does.
func serverOf(t *testing.T, args ...string) (*https.Server, error) {
	t.Helper()
	tr := httpsTransport()
	fl := flag.NewFlagSet("ferry-relay", flag.ContinueOnError)
	fl.SetOutput(io.Discard)
	tr.flags(fl)
	if err := fl.Parse(args); err != nil {
		t.Fatal(err)
	}
	srv, err := tr.new(serverEnv{dataDir: t.TempDir(), log: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, err
	}
	return srv.(*https.Server), nil
}

func TestHTTPSFlagErrors(t *testing.T) {
	site := t.TempDir()
	certFile, keyFile := writeTestCert(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--https-site", site, "--https-upstream", "https://example.org"}, "not both"},
		{[]string{"--https-site", filepath.Join(site, "missing")}, "not a directory"},
		{[]string{"--https-upstream", "example.org"}, "want a URL"},
		{[]string{"--tls-cert", certFile}, "both --tls-cert and --tls-key"},
		{[]string{"--acme-domain", "relay.example.org", "--tls-cert", certFile, "--tls-key", keyFile}, "drop --tls-cert"},
		{[]string{"--tls-cert", keyFile, "--tls-key", keyFile}, "load --tls-cert"},
	} {
		if _, err := serverOf(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
}

// TestHTTPSCertificates: the link pins a self-signed --tls-cert and the
// generated certificate, never an ACME one, and names the ACME domain.
func TestHTTPSCertificates(t *testing.T) {
	certFile, keyFile := writeTestCert(t)
	for _, tc := range []struct {
		name    string
		args    []string
		pinned  bool
		wantSNI string
	}{
		{"self-signed", nil, true, "127.0.0.1"},
		{"files", []string{"--tls-cert", certFile, "--tls-key", keyFile}, true, "example.com"},
		{"acme", []string{"--acme-domain", "relay.example.org"}, false, "relay.example.org"},
		{"proxy with a public certificate", []string{"--https-behind-proxy", "--https-sni", "relay.example.org"}, false, "relay.example.org"},
		{"proxy with a self-signed one", []string{"--https-behind-proxy", "--tls-cert", certFile}, true, "example.com"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := serverOf(t, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			ep := srv.Endpoint("127.0.0.1:443")
			if _, ok := ep.Param(https.ParamPin); ok != tc.pinned {
				t.Errorf("endpoint %s: pinned %v, want %v", ep, ok, tc.pinned)
			}
			sni, ok := ep.Param(https.ParamSNI)
			if tc.wantSNI == "127.0.0.1" {
				if ok {
					t.Errorf("endpoint %s names an IP address as sni", ep)
				}
			} else if sni != tc.wantSNI {
				t.Errorf("endpoint %s: sni %q, want %q", ep, sni, tc.wantSNI)
			}
		})
	}
}

// TestHTTPSWebsites: --https-site serves a directory and --https-upstream
// another site, to everyone without the secret.
func TestHTTPSWebsites(t *testing.T) {
	site := t.TempDir()
	if err := os.WriteFile(filepath.Join(site, "index.html"), []byte("<p>from the directory</p>"), 0o644); err != nil {
		t.Fatal(err)
	}
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "<p>from upstream, %s</p>", r.URL.Path)
	}))
	defer upstream.Close()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "<title>Notes</title>"},
		{[]string{"--https-site", site}, "<p>from the directory</p>"},
		{[]string{"--https-upstream", upstream.URL}, "<p>from upstream, /</p>"},
	} {
		srv, err := serverOf(t, tc.args...)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln := srv.Listener(raw)
		tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://" + raw.Addr().String() + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		tr.CloseIdleConnections()
		ln.Close()
		if !strings.Contains(string(body), tc.want) {
			t.Errorf("%q: the website answered %q, want it to contain %q", tc.args, body, tc.want)
		}
	}
}

// writeTestCert writes a self-signed example.com certificate and key.
func writeTestCert(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	certPEM, keyPEM, err := https.SelfSignedCert("example.com", rand.Reader, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := pem.Decode(certPEM); b == nil {
		t.Fatal("no PEM certificate")
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}
