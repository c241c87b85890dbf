package censor

import (
	"bytes"
	"net/netip"
	"strings"
	"time"
)

// MaxFirst bounds the first client payload a Flow keeps: enough for any
// ClientHello a browser sends (Chromium's with an ML-KEM key share is
// about 1.8 KB) and for the headers of an HTTP request.
const MaxFirst = 16 << 10

// MaxRecords bounds the records a Flow keeps in each direction.
const MaxRecords = 16

// MaxTLSRecords bounds the TLS records a Flow keeps, both directions
// together: enough for the outer handshake and the first records after
// it, which are what record-shape rules look at.
const MaxTLSRecords = 64

// Kind says what the first client payload of a flow looks like.
type Kind string

// The kinds of first payloads.
const (
	KindNone  Kind = "none"  // the client sent nothing (yet)
	KindTLS   Kind = "tls"   // a TLS record: [16-17] 03 [00-09], the prefix of Wu et al.'s exemption 5
	KindHTTP  Kind = "http"  // an HTTP/1 request line: a method token and a space
	KindOther Kind = "other" // anything else
)

// httpMethods are the request methods that make a first payload HTTP for
// Classify (RFC 9110 section 9 plus PATCH).
var httpMethods = [...]string{"GET ", "HEAD ", "POST ", "PUT ", "DELETE ", "CONNECT ", "OPTIONS ", "TRACE ", "PATCH "}

// Classify says what the first client payload b looks like. It reads at
// most the first 8 bytes of b.
func Classify(b []byte) Kind {
	switch {
	case len(b) == 0:
		return KindNone
	case isTLSPrefix(b):
		return KindTLS
	}
	for _, m := range httpMethods {
		if bytes.HasPrefix(b, []byte(m)) {
			return KindHTTP
		}
	}
	return KindOther
}

// isTLSPrefix reports whether b starts like a TLS handshake or
// application-data record: [16-17] 03 [00-09].
func isTLSPrefix(b []byte) bool {
	return len(b) >= 3 && (b[0] == 0x16 || b[0] == 0x17) && b[1] == 0x03 && b[2] <= 0x09
}

// maxHost bounds a host name (RFC 1035: 253 characters in text form, plus
// room for a port).
const maxHost = 260

// HTTPHost returns the value of the Host header of the HTTP/1 request at
// the start of b, lower-cased and without a port, and whether one was
// found in the request head. It stops at the end of the head (an empty
// line) or of b, never allocates more than the host it returns, and
// rejects a host with characters not allowed in a URI authority.
func HTTPHost(b []byte) (string, bool) {
	if Classify(b) != KindHTTP {
		return "", false
	}
	// Skip the request line.
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return "", false
	}
	rest := b[i+1:]
	for len(rest) > 0 {
		var line []byte
		if j := bytes.IndexByte(rest, '\n'); j >= 0 {
			line, rest = rest[:j], rest[j+1:]
		} else {
			line, rest = rest, nil // a header cut short is still a header for a censor
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 {
			break // end of the head
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || !bytes.EqualFold(name, []byte("host")) {
			continue
		}
		host := bytes.Trim(value, " \t")
		if len(host) == 0 || len(host) > maxHost {
			return "", false
		}
		return normalizeHost(string(host))
	}
	return "", false
}

// normalizeHost lower-cases host, strips a port and IPv6 brackets, and
// rejects characters a host cannot hold.
func normalizeHost(host string) (string, bool) {
	if strings.HasPrefix(host, "[") {
		end := strings.IndexByte(host, ']')
		if end < 0 {
			return "", false
		}
		host = host[1:end]
	} else if i := strings.LastIndexByte(host, ':'); i >= 0 {
		host = host[:i]
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "" {
		return "", false
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == ':') {
			return "", false
		}
	}
	return host, true
}

// Direction is the direction of a record.
type Direction uint8

// The two directions of a flow.
const (
	Up   Direction = iota // client to server
	Down                  // server to client
)

// String returns "up" or "down".
func (d Direction) String() string {
	if d == Up {
		return "up"
	}
	return "down"
}

// Record is one read from one side of a flow, as a TCP proxy sees it: a
// censor's view of the sizes, directions and timing of a connection's
// first packets.
type Record struct {
	Dir  Direction
	Size int
	// At is the time since the flow started.
	At time.Duration
}

// Flow is what the censor knows about one TCP connection.
type Flow struct {
	// Client is the real client address; rules key their state by its IP.
	Client netip.AddrPort
	// Server is the server address the client connected to.
	Server netip.AddrPort
	Start  time.Time

	// First is the first client payload, at most MaxFirst bytes.
	First []byte
	Kind  Kind
	// Hello is the parsed ClientHello when Kind is KindTLS and First holds
	// a complete one, and HelloErr why not otherwise.
	Hello    *ClientHello
	HelloErr error
	// Host is the SNI of a ClientHello or the Host header of an HTTP
	// request, lower-cased; empty when there is none.
	Host string

	// Records are the first MaxRecords reads in each direction, in order
	// (filled in by the Middlebox).
	Records []Record
	// TLS are the first MaxTLSRecords TLS records of both directions, in
	// the order their last bytes arrived (filled in by the Middlebox); they
	// stop at the first bytes of a direction that are not a TLS record.
	TLS []TLSRecord
	// BytesUp and BytesDown count the bytes forwarded to the server and to
	// the client.
	BytesUp, BytesDown int64
	// ServerClose is how the server side ended: "FIN", "RST", "open" (the
	// client or the censor ended the flow first) or "" while the flow runs,
	// and ServerCloseAfter when the server's FIN or RST came, from Start.
	ServerClose      string
	ServerCloseAfter time.Duration
	// Duration is the time from Start until the flow ended.
	Duration time.Duration

	ja4     string // Hello's JA4, computed once
	tlsDone bool   // no more TLS records will be added
}

// NewFlow returns the flow of a connection from client to server whose
// first client payload is first (nil if the client has sent nothing). It
// copies at most MaxFirst bytes of first, classifies them and parses a
// ClientHello or the HTTP Host header.
func NewFlow(client, server netip.AddrPort, start time.Time, first []byte) *Flow {
	f := &Flow{Client: client, Server: server, Start: start}
	f.setFirst(first)
	return f
}

// setFirst records and parses the first client payload.
func (f *Flow) setFirst(first []byte) {
	if len(first) > MaxFirst {
		first = first[:MaxFirst]
	}
	f.First = bytes.Clone(first)
	f.Kind = Classify(f.First)
	f.Hello, f.HelloErr, f.Host, f.ja4 = nil, nil, "", ""
	switch f.Kind {
	case KindTLS:
		f.Hello, f.HelloErr = ParseClientHello(f.First)
		if f.Hello != nil {
			if h, ok := normalizeHost(f.Hello.SNI); ok {
				f.Host = h
			}
			f.ja4 = f.Hello.JA4()
		}
	case KindHTTP:
		f.Host, _ = HTTPHost(f.First)
	}
}

// JA4 returns the JA4 fingerprint of the flow's ClientHello, or "".
func (f *Flow) JA4() string {
	if f.ja4 == "" && f.Hello != nil {
		f.ja4 = f.Hello.JA4()
	}
	return f.ja4
}
