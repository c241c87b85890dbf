// Package https is Ferry's https transport: to a censor, a Ferry client is
// Chromium opening a website. The client's TLS ClientHello is, list by
// list, the one Debian's Chromium sends (uTLS with a hand-kept spec), and
// after TLS it speaks HTTP/2 as Chromium does; its first request carries a
// time-bound, replay-protected proof that it holds the relay's secret, and
// only then does the request's stream become the channel's byte stream.
// The relay side is a net/http server: everyone without the secret,
// including a replay of a real client's request, gets its website, and
// it works behind a TLS-terminating reverse proxy (nginx, Caddy, a CDN).
// The first records each way are padded to the sizes of a page load.
//
// It is not a channel: the tunnel is never trusted for authentication or
// confidentiality; package channel authenticates the relay inside it.
// docs/transports.md section 4 is the specification.
package https
