package sqlite_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/relay/sqlite"
)

func ExampleOpen() {
	dir, _ := os.MkdirTemp("", "relay")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	s, err := sqlite.Open(ctx, filepath.Join(dir, "relay.db"), nil)
	if err != nil {
		panic(err)
	}
	defer s.Close()

	mb := [16]byte{1}
	s.SetToken(ctx, mb, [32]byte{2}) // creates the mailbox
	seq, _, err := s.Put(ctx, mb, relay.Envelope{ID: [16]byte{3}, Received: time.Now(), Data: []byte("sealed")}, relay.Quota{})
	if err != nil {
		panic(err) // Put returned: the envelope is on disk
	}
	envs, _ := s.Pending(ctx, mb, 0, 10)
	fmt.Println(seq, len(envs), string(envs[0].Data))
	// Output: 1 1 sealed
}
