// Package censor is Ferry's censor testbed: a rules engine over network
// flows, the named policies of docs/censor.md (each reproducing a censor
// behaviour published in a measurement paper), and a TCP middlebox that
// applies a policy to real connections on loopback.
//
// The same Engine plays the censor in three ways:
//
//   - Middlebox forwards TCP from a listener to an upstream server and
//     applies the policy to every connection (cmd/ferry-censor).
//   - Engine.Wrap and Dialer apply it in-process to any net.Conn, so the
//     tests of other packages play the censor without root.
//   - Engine.Admit, Engine.Inspect and Engine.Observe evaluate flows
//     directly, and TLSInTLS classifies a connection's TLS records.
//
// Randomness and time are injected (Engine.Rand, Engine.Clock), so a 180 s
// residual block or a 0.263 blocking probability is tested without waiting
// and reproducibly.
//
// Package censor is not a firewall: it sees only what a TCP proxy sees (the
// byte streams, their timing and how they end), it cannot drop single
// packets (except the SYNs of a null-routed listener, on Linux) or spoof
// addresses, and it never inspects anything but loopback traffic in the
// tests. Where a published censor drops packets, the
// middlebox stops forwarding bytes and keeps the connection open, which is
// what the client observes. See docs/censor.md.
package censor
