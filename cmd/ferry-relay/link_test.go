package main

import (
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// freePort returns a loopback address nobody listens on.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestLinkRace runs the README's quick start the way a new user did:
// "ferry-relay --data D &" and at once "ferry-relay link --data D". On a
// fresh directory link failed with "no relay key", and with --listen it
// printed the default port. Now link waits for the relay and prints the
// link it serves; so too when an earlier run, killed with SIGKILL, left
// its endpoints behind.
func TestLinkRace(t *testing.T) {
	t.Parallel()
	bin := buildRelay(t)
	data := filepath.Join(t.TempDir(), "data")
	for i := range 4 {
		addr := freePort(t)
		cmd := exec.Command(bin, "--data", data, "--listen", "tcp="+addr, "--log-level", "error")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(bin, "link", "--data", data).Output()
		if err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("run %d: link: %v", i, err)
		}
		got := strings.TrimSpace(string(out))
		// The previous run was killed: its endpoints are still on disk.
		cmd.Process.Kill()
		cmd.Wait()
		if !strings.HasSuffix(got, "&tcp="+addr) {
			t.Fatalf("run %d: link printed %q, want the endpoint tcp=%s", i, got, addr)
		}
	}
	if _, err := exec.Command(bin, "link", "--data", data, "--wait", "200ms").Output(); err == nil {
		t.Fatal("link with no relay running printed a link")
	}
}

// TestOneRelayPerDataDir: a second relay on a data directory in use is
// refused in one sentence.
func TestOneRelayPerDataDir(t *testing.T) {
	t.Parallel()
	bin := buildRelay(t)
	data := filepath.Join(t.TempDir(), "data")
	startRelay(t, bin, "--data", data, "--listen", "tcp=127.0.0.1:0")
	out, err := exec.Command(bin, "--data", data, "--listen", "tcp=127.0.0.1:0").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "another ferry-relay is running with --data") {
		t.Fatalf("second relay: %v, %q", err, out)
	}
}

// TestHelpAndVersion: "ferry-relay help" prints the usage and exits 0 (it
// was an error), and --version prints the version.
func TestHelpAndVersion(t *testing.T) {
	t.Parallel()
	bin := buildRelay(t)
	out, err := exec.Command(bin, "help").Output()
	if err != nil || !strings.Contains(string(out), "ferry-relay link") || !strings.Contains(string(out), "-listen") {
		t.Fatalf("help: %v, %q", err, out)
	}
	out, err = exec.Command(bin, "--version").Output()
	if err != nil || !strings.HasPrefix(string(out), "ferry-relay ") || !strings.Contains(string(out), "(protocol 1)") {
		t.Fatalf("--version: %v, %q", err, out)
	}
}
