// Package ferry is the client library: a user's profile (identity, device
// key, relay), contacts made by invites, 1:1 text messages with delivery and
// read receipts, an outbox that survives crashes and unreachable relays, and
// de-duplication so each message is stored exactly once. State lives in an
// encrypted SQLite database in the profile directory (internal/localstore).
//
// It speaks to relays through packages transport, channel and wire, and
// leaves all end-to-end cryptography to package session. It is not a user
// interface: cmd/ferry is the command-line client and terminal UI over it.
// docs/client.md describes its state machines and the content format.
package ferry
