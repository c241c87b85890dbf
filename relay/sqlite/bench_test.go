package sqlite_test

import (
	"path/filepath"
	"testing"

	"github.com/ferry-im/ferry/relay/storetest"
)

// BenchmarkPut measures durable Puts per second with many concurrent
// writers, which is what group commit is for.
func BenchmarkPut(b *testing.B) {
	s := openAt(b, filepath.Join(b.TempDir(), "relay.db"))
	defer s.Close()
	storetest.BenchPut(b, s)
}
