package monitor

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
)

func errEOF() error           { return fmt.Errorf("read frame: %w", io.EOF) }
func errPlain(s string) error { return errors.New(s) }
func errReset() error {
	return &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}
}
func errRefused() error {
	return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
}
func errDeadline() error { return fmt.Errorf("handshake: %w", os.ErrDeadlineExceeded) }
func errNXDomain() error {
	return &net.OpError{Op: "dial", Err: &net.DNSError{Err: "no such host", Name: "relay.invalid", IsNotFound: true}}
}
func errHostname() error {
	return fmt.Errorf("tls: %w", x509.HostnameError{Host: "x", Certificate: &x509.Certificate{}})
}
