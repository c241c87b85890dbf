package sqlite_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/relay/sqlite"
	"github.com/ferry-im/ferry/relay/storetest"
)

func openAt(t testing.TB, path string) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), path, nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Config{
		Open: func(t *testing.T) relay.Store {
			return openAt(t, filepath.Join(t.TempDir(), "relay.db"))
		},
		Reopen: func(t *testing.T, s relay.Store) relay.Store {
			if err := s.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			return openAt(t, s.(*sqlite.Store).Path())
		},
	})
}
