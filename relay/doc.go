// Package relay is Ferry's store-and-forward server: per-device mailboxes
// with at-least-once delivery and deletion on acknowledgement, push to
// connected devices, a prekey directory, sealed-sender delivery tokens,
// per-mailbox quotas and per-key and per-address rate limits.
//
// A Server never owns a listener: the binary (cmd/ferry-relay) accepts
// connections from whatever transports it runs and hands each net.Conn to
// Server.ServeConn, which runs the channel handshake and then one handler per
// frame type. Persistent state lives behind the Store interface; relay/sqlite
// is the default backend, relay/memstore an in-memory fake, and
// relay/storetest the conformance suite every backend runs; relay/relaytest
// runs a real relay on loopback for other packages' tests.
//
// The relay stores opaque bytes. It never imports the end-to-end crypto
// (package session; a test enforces it), never sees plaintext, and does not
// learn who sends to whom: senders connect with throwaway keys and prove only
// that they hold the recipient's delivery token. docs/protocol.md section 6
// specifies the semantics implemented here.
package relay
