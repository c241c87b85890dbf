//go:build !unix

package outbox

// lockFlush is a no-op where flock is missing: flushes are serialised
// within one process only.
func lockFlush(string) (func(), error) { return func() {}, nil }

// tryLock always succeeds where flock is missing.
func tryLock(string) (func(), bool, error) { return func() {}, true, nil }
