// Package httpstest holds helpers for tests of the https transport and of
// the commands that use it: a real nginx in front of a relay. It is
// imported only by tests.
package httpstest

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// NginxPath finds nginx. Without it the test fails when the CI variable is
// set (.ci/run installs nginx) and is skipped otherwise.
func NginxPath(t testing.TB) string {
	t.Helper()
	for _, p := range []string{"nginx", "/usr/sbin/nginx"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("nginx is not installed, and CI is set: .ci/run installs it (apt-get install nginx)")
	}
	t.Skip("nginx is not installed; install Debian's nginx package to run the reverse-proxy tests (they fail instead of skipping when CI is set)")
	return ""
}

// NginxConfig is the server block of docs/transports.md section 4.6:
// nginx terminates TLS (HTTP/2 and HTTP/1.1) with the certificate, passes
// the relay's secret path to the backend over h2c with grpc_pass, which
// streams both ways, and everything else to the backend (or to Site, if
// set) with proxy_pass.
const NginxConfig = `
    server {
        listen {{listen}} ssl http2;
        server_name www.example.com;
        ssl_certificate {{cert}};
        ssl_certificate_key {{key}};

        # The relay's secret path (ferry-relay logs it as "path"): a
        # bidirectional stream to the relay's --https-behind-proxy listener.
        location = {{path}} {
            grpc_pass grpc://{{backend}};
            grpc_read_timeout 1d;
            grpc_send_timeout 1d;
            client_max_body_size 0;
        }
        # The website: the relay's own (as here), or any other.
        location / {
            proxy_pass http://{{site}};
        }
    }
`

// Nginx starts nginx on a fresh loopback port with NginxConfig and returns
// its address. nginx stops when the test ends.
func Nginx(t testing.TB, cert tls.Certificate, path, backend, site string) string {
	t.Helper()
	nginx := NginxPath(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writePEM(t, cert, certFile, keyFile)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	server := strings.NewReplacer("{{listen}}", addr, "{{cert}}", certFile, "{{key}}", keyFile,
		"{{path}}", path, "{{backend}}", backend, "{{site}}", site).Replace(NginxConfig)
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;" // workers must write the temp paths in dir
	}
	conf := fmt.Sprintf(`%s
worker_processes 1;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log warn;
events { worker_connections 512; }
http {
    access_log off;
    client_body_temp_path %[2]s/body;
    proxy_temp_path %[2]s/proxy;
    fastcgi_temp_path %[2]s/fastcgi;
    uwsgi_temp_path %[2]s/uwsgi;
    scgi_temp_path %[2]s/scgi;
%[3]s}
`, user, dir, server)
	confFile := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(nginx, "-p", dir, "-c", confFile, "-g", "daemon off;")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start nginx: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt) // fast shutdown
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(dir, "error.log")); err == nil {
				t.Logf("nginx error.log:\n%s", b)
			}
		}
	})
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return addr
		}
		select {
		case err := <-done:
			t.Fatalf("nginx exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx did not listen on %s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func writePEM(t testing.TB, cert tls.Certificate, certFile, keyFile string) {
	t.Helper()
	var certPEM []byte
	for _, der := range cert.Certificate {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	key, ok := cert.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		t.Fatalf("certificate key is %T, want ECDSA", cert.PrivateKey)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
