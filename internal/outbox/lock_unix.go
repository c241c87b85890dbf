//go:build unix

package outbox

import (
	"os"
	"path/filepath"
	"syscall"
)

// lockFlush takes an exclusive lock on the profile's flush.lock file, so
// that two processes using one profile (ferry chat and ferry send, say)
// never flush the outbox at the same time: two concurrent flushes could
// interleave one sender's envelopes at the relay. It blocks until the lock
// is free and returns the function that releases it.
func lockFlush(home string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(home, "flush.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// tryLock takes an exclusive lock on the file at path if no other
// process holds it, and returns the function that releases it; ok is
// false if another process holds it.
func tryLock(path string) (release func(), ok bool, err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, false, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if err == syscall.EWOULDBLOCK {
			return nil, false, nil
		}
		return nil, false, err
	}
	return func() {
		os.Remove(path)
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, true, nil
}
