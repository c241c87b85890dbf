package postgres_test

import (
	"context"
	"time"

	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/relay/postgres"
)

func ExampleOpen() {
	ctx := context.Background()
	// pool_max_conns bounds the connections this relay opens (half
	// writers, half readers); search_path picks the schema.
	s, err := postgres.Open(ctx, "postgres://ferry@db.example:5432/ferry?pool_max_conns=8&search_path=relay", nil)
	if err != nil {
		panic(err)
	}
	defer s.Close()

	mb := [16]byte{1}
	s.SetToken(ctx, mb, [32]byte{2}) // creates the mailbox
	if _, _, err := s.Put(ctx, mb, relay.Envelope{ID: [16]byte{3}, Received: time.Now(), Data: []byte("sealed")}, relay.Quota{}); err != nil {
		panic(err) // Put returned nil: the envelope is committed
	}
}
