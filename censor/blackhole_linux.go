package censor

import (
	"net"
	"syscall"
	"time"
)

// blackhole makes ln drop the SYN of every new connection, as a null
// route does: it shrinks the listener's accept queue to one entry (listen
// again with a backlog of 0) and fills it with a connection of its own,
// which nobody accepts. Linux drops a SYN that reaches a listener whose
// accept queue is full, without an RST, so a client's connect hangs until
// its own timeout. The returned plug holds the queue full; the caller
// closes it with ln. It returns false when ln is not a TCP listener or
// the kernel refuses.
func blackhole(ln net.Listener) (plug net.Conn, ok bool) {
	tl, isTCP := ln.(*net.TCPListener)
	if !isTCP {
		return nil, false
	}
	rc, err := tl.SyscallConn()
	if err != nil {
		return nil, false
	}
	var lerr error
	if err := rc.Control(func(fd uintptr) { lerr = syscall.Listen(int(fd), 0) }); err != nil || lerr != nil {
		return nil, false
	}
	addr := tl.Addr().(*net.TCPAddr)
	if addr.IP.IsUnspecified() {
		addr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: addr.Port}
		if tl.Addr().(*net.TCPAddr).IP.To4() == nil {
			addr.IP = net.IPv6loopback
		}
	}
	// A connection already queued fills the queue as well: then this dial
	// times out, and SYNs are dropped all the same.
	d := net.Dialer{Timeout: 2 * time.Second}
	plug, err = d.Dial("tcp", addr.String())
	if err != nil {
		return nil, true
	}
	return plug, true
}
