//go:build !linux

package censor

import "net"

// blackhole drops SYNs on Linux only; elsewhere the Middlebox accepts a
// null-routed connection and lets it hang.
func blackhole(net.Listener) (net.Conn, bool) { return nil, false }
