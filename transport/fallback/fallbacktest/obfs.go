package fallbacktest

import (
	"testing"
	"time"

	"github.com/ferry-im/ferry/transport/obfs"
)

// ObfsServer returns an obfs relay half with a fresh key that holds
// failed connections for hold (the default when 0), for tests that need a
// second transport beside tcp.
func ObfsServer(tb testing.TB, hold time.Duration) *obfs.Server {
	tb.Helper()
	key, err := obfs.GenerateKey(nil)
	if err != nil {
		tb.Fatal(err)
	}
	srv, err := obfs.NewServer(obfs.ServerConfig{Key: key, Hold: hold})
	if err != nil {
		tb.Fatal(err)
	}
	return srv
}
