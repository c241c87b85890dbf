package monitor

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
)

// Failure strings. The first group is OONI's (the names its probes write
// in a measurement's "failure" fields, see docs/monitor.md); the second is
// Ferry's own, for failures OONI has no name for, prefixed "ferry_".
const (
	FailureTimeout            = "generic_timeout_error"
	FailureConnRefused        = "connection_refused"
	FailureConnReset          = "connection_reset"
	FailureConnAborted        = "connection_aborted"
	FailureEOF                = "eof_error"
	FailureHostUnreachable    = "host_unreachable"
	FailureNetworkUnreachable = "network_unreachable"
	FailureDNSNXDomain        = "dns_nxdomain_error"
	FailureDNSNoAnswer        = "dns_no_answer"
	FailureDNSTemporary       = "dns_temporary_failure"
	FailureDNSServer          = "dns_server_misbehaving"
	FailureSSLInvalidHostname = "ssl_invalid_hostname"
	FailureSSLUnknownAuth     = "ssl_unknown_authority"
	FailureSSLInvalidCert     = "ssl_invalid_certificate"
	FailureSSLHandshake       = "ssl_failed_handshake"
	FailureInterrupted        = "interrupted"
	// FailureUnknownPrefix starts every failure OONI does not classify;
	// the error's text follows.
	FailureUnknownPrefix = "unknown_failure: "

	// FailureDenied: the relay answered but refused the probe account (it
	// forgot the account's delivery token, or the request was malformed).
	FailureDenied = "ferry_denied"
	// FailureNotDelivered: every connection worked, yet the message or its
	// receipt did not arrive in time.
	FailureNotDelivered = "ferry_not_delivered"
	// FailureRelay: the relay refused a request for a reason of its own
	// (rate limited, over quota, storage unavailable).
	FailureRelay = "ferry_relay_error"
	// FailureLocal: the monitor's own machine failed (disk full, a
	// corrupted probe profile).
	FailureLocal = "ferry_local_error"
	// FailureBadResponse: the reference site or the relay answered with
	// bytes that are not what the protocol expects.
	FailureBadResponse = "ferry_bad_response"
)

// Failure returns OONI's failure string for err: "" for nil,
// generic_timeout_error for any timeout, connection_reset for an RST, and
// so on; FailureUnknownPrefix and the error's text for what it does not
// recognise.
func Failure(err error) string {
	if err == nil {
		return ""
	}
	if s := netFailure(err); s != "" {
		return s
	}
	if s := tlsFailure(err); s != "" {
		return s
	}
	return FailureUnknownPrefix + err.Error()
}

func netFailure(err error) string {
	var dnsErr *net.DNSError
	var timeout interface{ Timeout() bool }
	switch {
	case errors.Is(err, context.Canceled):
		return FailureInterrupted
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.Is(err, syscall.ETIMEDOUT):
		return FailureTimeout
	case errors.As(err, &dnsErr):
		switch {
		case dnsErr.IsNotFound:
			return FailureDNSNXDomain
		case dnsErr.IsTimeout:
			return FailureTimeout
		case dnsErr.IsTemporary:
			return FailureDNSTemporary
		}
		return FailureDNSServer
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return FailureConnReset
	case errors.Is(err, syscall.ECONNREFUSED):
		return FailureConnRefused
	case errors.Is(err, syscall.ECONNABORTED):
		return FailureConnAborted
	case errors.Is(err, syscall.EHOSTUNREACH):
		return FailureHostUnreachable
	case errors.Is(err, syscall.ENETUNREACH):
		return FailureNetworkUnreachable
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.ErrClosedPipe):
		return FailureEOF
	case errors.As(err, &timeout) && timeout.Timeout():
		return FailureTimeout
	}
	return ""
}

func tlsFailure(err error) string {
	var (
		host    x509.HostnameError
		hostP   *x509.HostnameError
		unknown x509.UnknownAuthorityError
		unkP    *x509.UnknownAuthorityError
		invalid x509.CertificateInvalidError
		invP    *x509.CertificateInvalidError
		verify  *tls.CertificateVerificationError
		alert   tls.AlertError
		header  tls.RecordHeaderError
	)
	switch {
	case errors.As(err, &host), errors.As(err, &hostP):
		return FailureSSLInvalidHostname
	case errors.As(err, &unknown), errors.As(err, &unkP):
		return FailureSSLUnknownAuth
	case errors.As(err, &invalid), errors.As(err, &invP), errors.As(err, &verify):
		return FailureSSLInvalidCert
	case errors.As(err, &alert), errors.As(err, &header):
		return FailureSSLHandshake
	case strings.HasPrefix(err.Error(), "tls: "):
		return FailureSSLHandshake
	}
	return ""
}

// Mechanism is how a censor stops or slows a cell, as the trials show it.
type Mechanism string

// Mechanisms.
const (
	MechNone     Mechanism = ""
	MechReset    Mechanism = "reset"    // connections are reset (RST) after the first bytes
	MechDrop     Mechanism = "drop"     // bytes vanish: the trial times out after the connection opened
	MechClose    Mechanism = "close"    // connections are closed (FIN) in the middle of a TLS or HTTP exchange or of a session
	MechTLS      Mechanism = "tls"      // the TLS handshake fails on a certificate or alert (interception)
	MechThrottle Mechanism = "throttle" // transfers go on at a plateau far below the control's rate
)

// outcome is what one trial says about censorship.
type outcome int

const (
	outcomeOK outcome = iota
	// outcomeBlocked: failed the way a censor makes things fail while
	// every control passed: evidence of blocking.
	outcomeBlocked
	// outcomeOutage: failed while a control failed too: the network was
	// down, for Ferry and the reference site alike.
	outcomeOutage
	// outcomeOther: failed in a way a censor does not cause, or that a
	// wrong link, a relay that is down or the monitor's own machine
	// causes as well (local errors, refused accounts, connection refused,
	// unknown names): no evidence either way.
	outcomeOther
)

// classify returns the trial's outcome and, for failures, its mechanism.
func (t *Trial) classify() (outcome, Mechanism) {
	if t.OK {
		return outcomeOK, MechNone
	}
	m := mechanism(t.Stage, t.Failure)
	if m == MechNone {
		return outcomeOther, MechNone
	}
	if t.controlsOK() || t.siblingOK() != nil {
		// The controls passed (or none was taken: every failure counts),
		// or another transport reached the same relay: the network worked.
		return outcomeBlocked, m
	}
	return outcomeOutage, m
}

// basis is what a failure's verdict rests on: what showed that the
// network worked while the probe failed.
type basis int

const (
	basisControl basis = iota // the controls passed
	basisSibling              // the controls failed or were not taken, but another transport reached the relay
	basisNone                 // no control was taken and no sibling worked: every failure counts
)

// basis returns what the verdict on a failed trial rests on.
func (t *Trial) basis() basis {
	switch {
	case t.controlsTaken() && t.controlsOK():
		return basisControl
	case t.siblingOK() != nil:
		return basisSibling
	}
	return basisNone
}

// mechanism maps a failure at a stage to the censorship mechanism it shows,
// or MechNone when a censor is not its likely cause.
func mechanism(stage Stage, failure string) Mechanism {
	switch stage {
	case StageLocal, StageAuth, StageDNS, StageConnect:
		// DNS and connect failures are what a wrong link or a relay that
		// is down give as well; without an outside control they are not
		// evidence of blocking (docs/monitor.md, "What the monitor cannot
		// tell").
		return MechNone
	}
	switch failure {
	case FailureConnReset, FailureConnAborted:
		return MechReset
	case FailureTimeout:
		return MechDrop
	case FailureEOF:
		if stage == StageHandshake {
			// The relay closes a handshake it cannot decrypt: a link with
			// the wrong key looks like this.
			return MechNone
		}
		return MechClose
	case FailureSSLInvalidHostname, FailureSSLUnknownAuth, FailureSSLInvalidCert, FailureSSLHandshake:
		return MechTLS
	}
	return MechNone
}
