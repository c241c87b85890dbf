package sqlite_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/relay/sqlite"
	"github.com/ferry-im/ferry/relay/storetest"
)

// crashEnv names the database a crash helper process writes to.
const crashEnv = "FERRY_SQLITE_CRASH_DB"

// TestCrashHelper is not a test on its own: TestKill9 runs the test binary
// with crashEnv set, and this writes until it is killed, printing a line
// for every write the store acknowledged.
func TestCrashHelper(t *testing.T) {
	path := os.Getenv(crashEnv)
	if path == "" {
		return
	}
	s, err := sqlite.Open(context.Background(), path, nil)
	if err == nil {
		err = storetest.WriteUntilKilled(s, os.Stdout)
	}
	fmt.Println("error", err)
	os.Exit(1)
}

// TestKill9 checks the durability claim: everything the store acknowledged
// before the process was killed with SIGKILL is there after reopening, and
// no popped prekey comes back.
func TestKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a subprocess; skipped with -short")
	}
	path := filepath.Join(t.TempDir(), "relay.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$")
	cmd.Env = append(os.Environ(), crashEnv+"="+path)
	cmd.Stderr = os.Stderr
	storetest.Kill9(t, cmd, func(t *testing.T) relay.Store { return openAt(t, path) })
}
