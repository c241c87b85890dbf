package sqlite_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/relay/sqlite"
)

// crashEnv names the database a crash helper process writes to.
const crashEnv = "FERRY_SQLITE_CRASH_DB"

var crashBox = [16]byte{'c', 'r', 'a', 's', 'h'}

// TestCrashHelper is not a test on its own: TestKill9 runs the test binary
// with crashEnv set, and this writes until it is killed, printing a line
// for every write the store acknowledged.
func TestCrashHelper(t *testing.T) {
	path := os.Getenv(crashEnv)
	if path == "" {
		return
	}
	ctx := context.Background()
	s, err := sqlite.Open(ctx, path, nil)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	up := relay.PrekeyUpload{Signed: []byte("signed")}
	for i := range uint32(300) {
		up.OneTime = append(up.OneTime, relay.Prekey{ID: i, Data: []byte("k")})
	}
	if err := s.SetToken(ctx, crashBox, [32]byte{1}); err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	if err := s.PutPrekeys(ctx, crashBox, up, 0); err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	out := bufio.NewWriter(os.Stdout)
	var mu sync.Mutex
	say := func(format string, args ...any) {
		mu.Lock()
		fmt.Fprintf(out, format+"\n", args...)
		out.Flush()
		mu.Unlock()
	}
	say("ready")
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := 0; ; i++ {
				var id [16]byte
				binary.BigEndian.PutUint32(id[:], uint32(w))
				binary.BigEndian.PutUint32(id[4:], uint32(i))
				if i%4 == 3 {
					b, err := s.PopBundle(ctx, crashBox)
					if err != nil {
						say("error %v", err)
						return
					}
					if b.HasOneTime {
						say("pop %d", b.OneTime.ID)
					}
					continue
				}
				seq, _, err := s.Put(ctx, crashBox, relay.Envelope{ID: id, Received: time.UnixMilli(int64(i)), Data: id[:8]}, relay.Quota{})
				if err != nil {
					say("error %v", err)
					return
				}
				say("put %x %d", id[:8], seq)
			}
		})
	}
	wg.Wait()
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
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	puts := map[string]uint64{}
	pops := map[uint32]bool{}
	lines := bufio.NewScanner(stdout)
	for lines.Scan() && len(puts) < 300 {
		f := strings.Fields(lines.Text())
		switch {
		case len(f) == 3 && f[0] == "put":
			seq, err := strconv.ParseUint(f[2], 10, 64)
			if err != nil {
				t.Fatalf("helper said %q", lines.Text())
			}
			puts[f[1]] = seq
		case len(f) == 2 && f[0] == "pop":
			id, err := strconv.ParseUint(f[1], 10, 32)
			if err != nil {
				t.Fatalf("helper said %q", lines.Text())
			}
			pops[uint32(id)] = true
		case len(f) > 0 && f[0] == "error":
			t.Fatalf("helper: %s", lines.Text())
		}
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if len(puts) < 300 {
		t.Fatalf("helper acknowledged only %d puts before exiting", len(puts))
	}

	s := openAt(t, path)
	defer s.Close()
	ctx := context.Background()
	stored := map[string]uint64{}
	var after uint64
	for {
		envs, err := s.Pending(ctx, crashBox, after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(envs) == 0 {
			break
		}
		for _, e := range envs {
			stored[fmt.Sprintf("%x", e.ID[:8])] = e.Seq
			after = e.Seq
		}
	}
	for id, seq := range puts {
		if got, ok := stored[id]; !ok || got != seq {
			t.Fatalf("acknowledged envelope %s (seq %d) after kill -9: stored seq %d, present %v", id, seq, got, ok)
		}
	}
	u, err := s.Usage(ctx, crashBox)
	if err != nil {
		t.Fatal(err)
	}
	if u.Count != len(stored) {
		t.Fatalf("usage count %d after recovery, but %d envelopes pending", u.Count, len(stored))
	}
	for {
		b, err := s.PopBundle(ctx, crashBox)
		if err != nil {
			t.Fatal(err)
		}
		if !b.HasOneTime {
			break
		}
		if pops[b.OneTime.ID] {
			t.Fatalf("one-time prekey %d popped before kill -9 was handed out again", b.OneTime.ID)
		}
	}
	t.Logf("%d puts and %d pops acknowledged before kill -9; %d envelopes stored", len(puts), len(pops), len(stored))
}
