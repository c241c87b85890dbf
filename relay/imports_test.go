package relay_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestNoSessionImport makes "the relay never sees plaintext" structural: no
// package the relay or its binary is built from, tests included, reaches
// the end-to-end crypto in package session.
func TestNoSessionImport(t *testing.T) {
	t.Parallel()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	}
	const module = "github.com/ferry-im/ferry"
	cmd := exec.Command(goBin, "list", "-deps", "-test", module+"/relay/...", module+"/cmd/ferry-relay/...")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	sawRelay := false
	for _, d := range deps {
		if d == module+"/relay" {
			sawRelay = true
		}
		if d == module+"/session" || strings.HasPrefix(d, module+"/session/") {
			t.Errorf("the relay's build reaches %s", d)
		}
	}
	if !sawRelay {
		t.Fatalf("go list did not list the relay package itself; the check is vacuous:\n%s", out)
	}
}
