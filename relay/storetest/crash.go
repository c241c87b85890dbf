package storetest

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-im/ferry/relay"
)

// crashBox is the mailbox a crash test writes to.
var crashBox = [16]byte{'c', 'r', 'a', 's', 'h'}

// WriteUntilKilled is the child's half of a kill -9 test (see Kill9): it
// creates a mailbox with 300 one-time prekeys in s, prints "ready", then
// writes from 16 goroutines (three Puts for every PopBundle) and prints a
// line to out for every write s acknowledged, until the process is killed.
// It returns only on an error.
func WriteUntilKilled(s relay.Store, out io.Writer) error {
	ctx := context.Background()
	up := relay.PrekeyUpload{Signed: []byte("signed")}
	for i := range uint32(300) {
		up.OneTime = append(up.OneTime, relay.Prekey{ID: i, Data: []byte("k")})
	}
	if err := s.SetToken(ctx, crashBox, [32]byte{1}); err != nil {
		return err
	}
	if err := s.PutPrekeys(ctx, crashBox, up, 0); err != nil {
		return err
	}
	w := bufio.NewWriter(out)
	var mu sync.Mutex
	say := func(format string, args ...any) {
		mu.Lock()
		fmt.Fprintf(w, format+"\n", args...)
		w.Flush()
		mu.Unlock()
	}
	say("ready")
	errs := make(chan error, 16)
	for g := range 16 {
		go func() { errs <- writeLoop(ctx, s, uint32(g), say) }()
	}
	return <-errs
}

// writeLoop is one writer of WriteUntilKilled.
func writeLoop(ctx context.Context, s relay.Store, g uint32, say func(string, ...any)) error {
	for i := 0; ; i++ {
		var id [16]byte
		binary.BigEndian.PutUint32(id[:], g)
		binary.BigEndian.PutUint32(id[4:], uint32(i))
		if i%4 == 3 {
			b, err := s.PopBundle(ctx, crashBox)
			if err != nil {
				return err
			}
			if b.HasOneTime {
				say("pop %d", b.OneTime.ID)
			}
			continue
		}
		seq, _, err := s.Put(ctx, crashBox, relay.Envelope{ID: id, Received: time.UnixMilli(int64(i)), Data: id[:8]}, relay.Quota{})
		if err != nil {
			return err
		}
		say("put %x %d", id[:8], seq)
	}
}

// Kill9 checks a durable store's promise: everything it acknowledged
// before its process was killed with SIGKILL is there afterwards. child is
// a process (not started) that runs WriteUntilKilled on the store; Kill9
// reads its acknowledgements until 300 Puts, kills it, then opens the store
// with reopen and checks that every acknowledged Put is pending with its
// seq, that the mailbox's usage matches, and that no one-time prekey popped
// before the kill is handed out again.
func Kill9(t *testing.T, child *exec.Cmd, reopen func(t *testing.T) relay.Store) {
	t.Helper()
	puts, pops := runUntilKilled(t, child, 300)
	s := reopen(t)
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

// runUntilKilled starts child, collects its acknowledgements until n Puts,
// and kills it.
func runUntilKilled(t *testing.T, child *exec.Cmd, n int) (puts map[string]uint64, pops map[uint32]bool) {
	t.Helper()
	stdout, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	puts, pops = map[string]uint64{}, map[uint32]bool{}
	lines := bufio.NewScanner(stdout)
	for lines.Scan() && len(puts) < n {
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
	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	child.Wait()
	if len(puts) < n {
		t.Fatalf("helper acknowledged only %d puts before exiting", len(puts))
	}
	return puts, pops
}
