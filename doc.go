// Package ferry is the client library: a user's profile (identity, device
// key, relay), contacts made by invites, conversations with their
// messages (text now; a message of a kind from a newer Ferry is kept as
// unsupported, and Ferry's own notices are a kind of their own), delivery
// and read receipts, an outbox that survives crashes and unreachable
// relays, de-duplication so each message is stored exactly once, and
// encrypted backups.
//
// It is the API only, thin over internal packages named for what they
// hold: internal/relayclient (the relay protocol), internal/inbox
// (receiving, one handler per content kind), internal/outbox (delivery),
// internal/invite (contacts), internal/prekeys, internal/content (the
// bytes inside the encryption) and internal/localstore (the encrypted
// SQLite store in the profile directory). All cryptography is package
// session's; it is not a user interface: cmd/ferry is the command line
// and terminal UI over it. docs/client.md describes the layers, the
// state machines and the formats.
package ferry
