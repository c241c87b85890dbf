//go:build unix

package main

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
)

// lockFile is the file a running relay holds a POSIX write lock on, for
// as long as it runs: a second relay on the same data directory is
// refused, and "ferry-relay link" learns which process serves it.
const lockFile = "relay.lock"

var errLocked = errors.New("locked")

// lockData takes the data directory's lock for this process, or returns
// errLocked if another process holds it. The lock goes with the process,
// however it ends.
func lockData(dir string) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	lk := syscall.Flock_t{Type: syscall.F_WRLCK}
	if err := syscall.FcntlFlock(f.Fd(), syscall.F_SETLK, &lk); err != nil {
		f.Close()
		if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EACCES) {
			return nil, errLocked
		}
		return nil, err
	}
	return func() { f.Close() }, nil
}

// lockHolder returns the process id of the relay running on dir, or 0 if
// none holds the lock. (A process never sees its own POSIX locks here.)
func lockHolder(dir string) int {
	f, err := os.Open(filepath.Join(dir, lockFile))
	if err != nil {
		return 0
	}
	defer f.Close()
	lk := syscall.Flock_t{Type: syscall.F_WRLCK}
	if err := syscall.FcntlFlock(f.Fd(), syscall.F_GETLK, &lk); err != nil || lk.Type == syscall.F_UNLCK {
		return 0
	}
	return int(lk.Pid)
}
