package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// Processes the end-to-end tests start beside ferry: ferry-censor, and
// relays whose output they read.

var (
	censorOnce sync.Once
	censorBin  string
	censorErr  error
)

// censorBinary builds ferry-censor once per test run.
func censorBinary(t *testing.T) string {
	t.Helper()
	binaries(t) // makes binDir
	censorOnce.Do(func() {
		out, err := exec.Command("go", "build", "-o", binDir, "github.com/ferry-im/ferry/cmd/ferry-censor").CombinedOutput()
		if err != nil {
			censorErr = fmt.Errorf("go build ferry-censor: %v\n%s", err, out)
		}
		censorBin = filepath.Join(binDir, "ferry-censor")
	})
	if censorErr != nil {
		t.Fatal(censorErr)
	}
	return censorBin
}

// newLinkUser makes a profile named name on relayLink.
func newLinkUser(t *testing.T, relayLink, name string) *user {
	t.Helper()
	bin, _ := binaries(t)
	u := &user{t: t, bin: bin, home: filepath.Join(t.TempDir(), name), name: name}
	u.must("init", "--relay", relayLink, "--name", name)
	return u
}

// startProcess starts bin with args, stops it when the test ends, and
// returns its collected stderr and, if firstLine, the first line of its
// stdout (waiting for it).
func startProcess(t *testing.T, firstLine bool, bin string, args ...string) (string, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	logs := new(syncBuffer)
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if !firstLine {
		cmd.Stdout = nil
		go func() { io.Copy(io.Discard, stdout) }()
		return "", logs
	}
	first := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		line := ""
		if sc.Scan() {
			line = sc.Text()
		}
		first <- line
		for sc.Scan() {
		}
	}()
	select {
	case l := <-first:
		return l, logs
	case <-time.After(20 * time.Second):
		t.Fatalf("%s printed nothing in 20 s:\n%s", filepath.Base(bin), logs)
	}
	return "", nil
}

// syncBuffer is a bytes.Buffer safe for a process to write while the
// test reads.
type syncBuffer struct {
	mu sync.Mutex // mu protects b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitListening waits up to 10 s for something to listen on addr.
func waitListening(t *testing.T, addr string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s: %v", addr, err)
		}
	}
}
