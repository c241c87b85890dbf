// Package atomicfile writes small files so that a crash leaves either the
// old content or the new, never a mix: the bytes go to a temporary file
// beside the target, are synced, and replace the target by a rename whose
// directory entry is synced too.
package atomicfile

import (
	"os"
	"path/filepath"
)

// Write replaces path with data, mode 0600, durably.
func Write(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return SyncDir(filepath.Dir(path))
}

// SyncDir syncs dir, so that entries created or renamed in it survive a
// crash.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
