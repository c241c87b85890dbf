// Package probe holds the monitor's probes of real relays: TextProbe,
// which sends a message from one probe account to another over one
// endpoint of a relay with the client library and waits for its delivery
// receipt, and Control, which measures a neutral reference site through
// the same path (a browser's TLS handshake, then a page download). Both
// watch every connection they make, at the raw and the transport layer,
// to say at which stage a failure happened and with which OONI failure.
//
// It is not a client: it drives package ferry as a user would, and keeps
// its probe accounts in the monitor's data directory.
package probe
