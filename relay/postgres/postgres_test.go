package postgres_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/ferry-im/ferry/internal/servicetest"
	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/relay/postgres"
	"github.com/ferry-im/ferry/relay/storetest"
)

// small keeps each store's connections few: the suite opens many stores
// at once, and the shared server allows 100 connections.
var small = &postgres.Options{Writers: 1, Readers: 1}

func openAt(t testing.TB, url string) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(context.Background(), url, small)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Config{
		Open: func(t *testing.T) relay.Store {
			return openAt(t, servicetest.PostgresURL(t))
		},
		Reopen: func(t *testing.T, s relay.Store) relay.Store {
			if err := s.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			return openAt(t, s.(*postgres.Store).URL())
		},
		Peer: func(t *testing.T, s relay.Store) relay.Store {
			return openAt(t, s.(*postgres.Store).URL())
		},
	})
}

// TestSchemaVersion checks that Open records the schema version, that a
// second Open (another relay) migrates nothing, and that a schema from a
// newer relay is refused rather than misread.
func TestSchemaVersion(t *testing.T) {
	url := servicetest.PostgresURL(t)
	openAt(t, url).Close()
	openAt(t, url).Close()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var v int
	if err := c.QueryRow(ctx, `SELECT version FROM ferry_schema`).Scan(&v); err != nil || v != 2 {
		t.Fatalf("schema version = %d, %v; want 2", v, err)
	}
	if _, err := c.Exec(ctx, `UPDATE ferry_schema SET version = 99`); err != nil {
		t.Fatal(err)
	}
	if s, err := postgres.Open(ctx, url, small); err == nil {
		s.Close()
		t.Fatal("Open accepted a schema from a newer relay")
	} else if !strings.Contains(err.Error(), "newer") {
		t.Fatalf("Open of a newer schema: %v, want an error saying it is newer", err)
	}
}
