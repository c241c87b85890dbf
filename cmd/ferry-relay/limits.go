package main

import "syscall"

// raiseFileLimit lifts the soft open-file limit to the hard one: every
// connection is a file, and the soft limit is often far below what the
// system allows (systemd units set LimitNOFILE, docs/operations.md).
func raiseFileLimit() {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
}
