package postgres_test

import (
	"context"
	"testing"

	"github.com/ferry-im/ferry/internal/servicetest"
	"github.com/ferry-im/ferry/relay/postgres"
	"github.com/ferry-im/ferry/relay/storetest"
)

// BenchmarkPut measures durable Puts per second into one mailbox with many
// concurrent writers, with the default Options (4 writer connections; one
// mailbox uses one of them).
func BenchmarkPut(b *testing.B) {
	s, err := postgres.Open(context.Background(), servicetest.PostgresURL(b), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	storetest.BenchPut(b, s)
}
