package postgres_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ferry-im/ferry/internal/servicetest"
	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/relay/postgres"
	"github.com/ferry-im/ferry/relay/storetest"
)

// crashEnv carries the database URL to the crash helper process.
const crashEnv = "FERRY_POSTGRES_CRASH_URL"

// TestCrashHelper is not a test on its own: TestKill9 runs the test binary
// with crashEnv set, and this writes until it is killed.
func TestCrashHelper(t *testing.T) {
	url := os.Getenv(crashEnv)
	if url == "" {
		return
	}
	s, err := postgres.Open(context.Background(), url, &postgres.Options{Writers: 2, Readers: 1})
	if err == nil {
		err = storetest.WriteUntilKilled(s, os.Stdout)
	}
	fmt.Println("error", err)
	os.Exit(1)
}

// TestKill9 checks that what the store acknowledged survives kill -9 of
// the relay process.
func TestKill9(t *testing.T) {
	url := servicetest.PostgresURL(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$")
	cmd.Env = append(os.Environ(), crashEnv+"="+url)
	cmd.Stderr = os.Stderr
	storetest.Kill9(t, cmd, func(t *testing.T) relay.Store { return openAt(t, url) })
}

// TestConnectionsKilled kills the store's database connections (as a
// crashing backend or a restarted pooler would) while writers are busy:
// every write acknowledged before or after is stored exactly once with the
// seq it was given, and the store recovers without being reopened.
func TestConnectionsKilled(t *testing.T) {
	app := servicetest.Name("ferry_kill_")
	url := servicetest.WithParam(servicetest.PostgresURL(t), "application_name", app)
	s, err := postgres.Open(context.Background(), url, &postgres.Options{Writers: 2, Readers: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	// Mailboxes 0-15 spread over both writers (by their last bytes).
	var mbs [16][16]byte
	for i := range mbs {
		mbs[i] = [16]byte{'k', 15: byte(i)}
		if err := s.SetToken(ctx, mbs[i], [32]byte{1}); err != nil {
			t.Fatal(err)
		}
	}
	var (
		mu     sync.Mutex
		acked  = map[[16]byte]uint64{}
		n      atomic.Int64
		failed atomic.Int64
		stop   atomic.Bool
		wg     sync.WaitGroup
	)
	for g := range 8 {
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				var id [16]byte
				binary.BigEndian.PutUint32(id[:], uint32(g))
				binary.BigEndian.PutUint32(id[4:], uint32(i))
				mb := mbs[(g+i)%len(mbs)]
				seq, _, err := s.Put(ctx, mb, relay.Envelope{ID: id, Received: time.Now(), Data: id[:8]}, relay.Quota{})
				if err != nil {
					failed.Add(1)
					continue
				}
				mu.Lock()
				acked[id] = seq
				mu.Unlock()
				n.Add(1)
			}
		})
	}
	waitFor := func(want int64) {
		for end := time.Now().Add(30 * time.Second); n.Load() < want; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(end) {
				stop.Store(true)
				wg.Wait()
				t.Fatalf("only %d writes acknowledged, want %d", n.Load(), want)
			}
		}
	}
	waitFor(200)
	killed := terminate(t, app)
	waitFor(n.Load() + 500)
	stop.Store(true)
	wg.Wait()
	if killed == 0 {
		t.Fatal("no connection of the store was found to kill")
	}
	stored := map[[16]byte]uint64{}
	for _, mb := range mbs {
		envs, err := s.Pending(ctx, mb, 0, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range envs {
			if _, ok := stored[e.ID]; ok {
				t.Fatalf("id %x stored twice", e.ID[:8])
			}
			stored[e.ID] = e.Seq
		}
	}
	for id, seq := range acked {
		if got, ok := stored[id]; !ok || got != seq {
			t.Fatalf("acknowledged write %x (seq %d): stored %v with seq %d", id[:8], seq, ok, got)
		}
	}
	t.Logf("killed %d connections; %d writes acknowledged, %d failed, %d stored", killed, len(acked), failed.Load(), len(stored))
}

// terminate ends every backend of application app, as an administrator
// would with pg_terminate_backend, and returns how many it ended.
func terminate(t *testing.T, app string) int {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, servicetest.PostgresAdminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var n int
	if err := c.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1`, app).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
