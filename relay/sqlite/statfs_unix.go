//go:build unix

package sqlite

import "golang.org/x/sys/unix"

// freeBytes is the space left for an unprivileged user on the file system
// that holds dir.
func freeBytes(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil //nolint:unconvert // field types differ between systems
}
