package censor

import (
	"errors"
	"fmt"
	"slices"
)

// The bytes a censor sees at the start of a TLS connection (RFC 8446
// sections 4.1.2 and 5.1). Every integer is big-endian.
//
//	record:      type(1)=0x16  legacy_record_version(2)  length(2)  fragment(length)
//	handshake:   msg_type(1)=0x01  length(3)  body(length)       spread over 1+ records
//	body:        legacy_version(2)  random(32)
//	             session_id<0..32>            1-byte length
//	             cipher_suites<2..2^16-2>     2-byte length, 2 bytes each
//	             compression_methods<1..255>  1-byte length
//	             extensions<0..2^16-1>        2-byte length, may be absent (TLS 1.2 and older)
//	extension:   type(2)  length(2)  data(length)
const (
	recordTypeHandshake = 0x16
	recordHeaderLen     = 5
	maxRecordPayload    = 1 << 14 // RFC 8446 5.1: TLSPlaintext.length <= 2^14
	handshakeTypeHello  = 0x01
	handshakeHeaderLen  = 4
	randomLen           = 32
	maxSessionIDLen     = 32
	maxHelloBodyLen     = 2 + randomLen + 1 + maxSessionIDLen + 2 + 0xfffe + 1 + 0xff + 2 + 0xffff
)

// TLS extension types the parser reads (IANA "TLS ExtensionType Values").
const (
	extServerName          = 0x0000 // RFC 6066 3: server_name_list<1..2^16-1>{name_type(1) host_name<1..2^16-1>}
	extSupportedGroups     = 0x000a // RFC 8446 4.2.7: named_group_list<2..2^16-1>
	extSignatureAlgorithms = 0x000d // RFC 8446 4.2.3: supported_signature_algorithms<2..2^16-2>
	extALPN                = 0x0010 // RFC 7301 3.1: protocol_name_list<2..2^16-1>{name<1..255>}
	extSupportedVersions   = 0x002b // RFC 8446 4.2.1: versions<2..254> (ClientHello form)
	extKeyShare            = 0x0033 // RFC 8446 4.2.8: client_shares<0..2^16-1>{group(2) key_exchange<1..2^16-1>}
	extECH                 = 0xfe0d // draft-ietf-tls-esni: encrypted_client_hello
	extESNI                = 0xffce // the earlier encrypted_server_name, dropped by the GFW since 2020-07-29
)

// errShortHello marks input that ends before the ClientHello does; see
// IsShortHello.
var errShortHello = errors.New("input ends before the client hello")

// IsShortHello reports whether err from ParseClientHello means only that
// the input ended early: every byte seen so far is consistent with a
// ClientHello, and more bytes from the same stream could complete it. Any
// other error means no continuation can make the stream a ClientHello.
func IsShortHello(err error) bool { return errors.Is(err, errShortHello) }

// ClientHello is a parsed TLS ClientHello: every list in wire order,
// GREASE values (RFC 8701) included. Byte slices alias one buffer owned by
// the ClientHello, never the input.
type ClientHello struct {
	// RecordVersion is legacy_record_version of the first record.
	RecordVersion uint16
	// LegacyVersion is the hello's legacy_version (0x0303 for TLS 1.3).
	LegacyVersion uint16
	Random        []byte
	SessionID     []byte
	CipherSuites  []uint16
	// CompressionMethods is the raw list; a modern client sends {0}.
	CompressionMethods []byte
	// Extensions holds the extension types in wire order, and
	// ExtensionData[i] the body of Extensions[i]. A hello without an
	// extensions block has both nil.
	Extensions    []uint16
	ExtensionData [][]byte

	// Decoded from the extensions; empty when the extension is absent.
	SNI                 string   // the first host_name of server_name
	ALPN                []string // application_layer_protocol_negotiation, in order
	SignatureAlgorithms []uint16
	SupportedGroups     []uint16
	SupportedVersions   []uint16
	KeyShareGroups      []uint16 // the group of each key_share entry, in order
	// ECH is true when encrypted_client_hello (0xfe0d) or the older
	// encrypted_server_name (0xffce) is present.
	ECH bool

	// Len is the number of input bytes the records carrying the hello
	// took, up to the end of the record in which the hello ends.
	Len int
}

// ParseClientHello parses the ClientHello at the start of b, the bytes a
// client sent first on a TCP connection: one or more TLS handshake records
// (a Chromium hello with an ML-KEM key share is about 1.8 KB and may span
// records). Bytes after the record in which the hello ends are ignored.
//
// If b ends before the hello does, the error satisfies IsShortHello. The
// memory allocated is bounded by a small multiple of len(b), whatever the
// lengths in b claim.
func ParseClientHello(b []byte) (*ClientHello, error) {
	msg, recVersion, n, err := readHandshake(b)
	if err != nil {
		return nil, err
	}
	h, err := parseHelloBody(msg)
	if err != nil {
		return nil, err
	}
	h.RecordVersion = recVersion
	h.Len = n
	return h, nil
}

// readHandshake reassembles the ClientHello handshake message from the
// records at the start of b. It returns the message body (a fresh copy),
// the first record's version and the bytes the records took. With too few
// bytes it checks every byte it has and returns errShortHello, so that an
// error other than errShortHello never turns into success as bytes arrive.
func readHandshake(b []byte) (body []byte, recVersion uint16, n int, err error) {
	var (
		msg  []byte // handshake bytes so far (a copy once more than one record)
		want = -1   // handshake body length once known
		off  int
	)
	// short checks the part of the body there is and reports errShortHello
	// if it has no error.
	short := func() error {
		if want >= 0 {
			end := min(len(msg), handshakeHeaderLen+want)
			if _, err := parseHelloBody(msg[handshakeHeaderLen:end]); err != nil && !IsShortHello(err) {
				return err
			}
		}
		return errShortHello
	}
	for records := 0; ; records++ {
		if len(b)-off < recordHeaderLen {
			if err := checkRecordPrefix(b[off:]); err != nil {
				return nil, 0, 0, err
			}
			return nil, 0, 0, short()
		}
		hdr := b[off : off+recordHeaderLen]
		if err := checkRecordPrefix(hdr); err != nil {
			return nil, 0, 0, err
		}
		if records == 0 {
			recVersion = uint16(hdr[1])<<8 | uint16(hdr[2])
		}
		length := int(hdr[3])<<8 | int(hdr[4])
		if length == 0 {
			return nil, 0, 0, errors.New("parse record: empty handshake record")
		}
		if length > maxRecordPayload {
			return nil, 0, 0, fmt.Errorf("parse record: length %d exceeds %d", length, maxRecordPayload)
		}
		frag := b[off+recordHeaderLen:]
		complete := len(frag) >= length
		if complete {
			frag = frag[:length]
		}
		switch records {
		case 0:
			msg = frag // aliases b; the body is cloned before it is returned
		case 1:
			msg = append(slices.Clip(msg), frag...) // copy: never append into b
		default:
			msg = append(msg, frag...)
		}
		if want < 0 && len(msg) >= 1 && msg[0] != handshakeTypeHello {
			return nil, 0, 0, fmt.Errorf("parse handshake: type %d is not client_hello", msg[0])
		}
		if want < 0 && len(msg) >= handshakeHeaderLen {
			want = int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3])
			if want > maxHelloBodyLen {
				return nil, 0, 0, fmt.Errorf("parse handshake: client hello length %d exceeds %d", want, maxHelloBodyLen)
			}
		}
		if !complete {
			return nil, 0, 0, short()
		}
		if want >= 0 && len(msg) >= handshakeHeaderLen+want {
			return slices.Clone(msg[handshakeHeaderLen : handshakeHeaderLen+want]), recVersion, off + recordHeaderLen + length, nil
		}
		off += recordHeaderLen + length
	}
}

// checkRecordPrefix checks the record header bytes present in p (up to 5).
func checkRecordPrefix(p []byte) error {
	if len(p) >= 1 && p[0] != recordTypeHandshake {
		return fmt.Errorf("parse record: content type %d is not handshake", p[0])
	}
	if len(p) >= 2 && p[1] != 3 {
		return fmt.Errorf("parse record: version major %d is not 3", p[1])
	}
	return nil
}

// reader reads the vectors of a TLS structure. A read past the end sets
// short; later reads return zero values.
type reader struct {
	b     []byte
	short bool
}

func (r *reader) take(n int) []byte {
	if r.short || n > len(r.b) {
		r.short = true
		r.b = nil
		return nil
	}
	p := r.b[:n:n]
	r.b = r.b[n:]
	return p
}

func (r *reader) u8() int {
	p := r.take(1)
	if p == nil {
		return 0
	}
	return int(p[0])
}

func (r *reader) u16() int {
	p := r.take(2)
	if p == nil {
		return 0
	}
	return int(p[0])<<8 | int(p[1])
}

// vec8 and vec16 read a vector with a 1- or 2-byte length prefix.
func (r *reader) vec8() []byte  { return r.take(r.u8()) }
func (r *reader) vec16() []byte { return r.take(r.u16()) }

// parseHelloBody parses a ClientHello body. If body is the start of a body
// that would parse, the error is errShortHello.
func parseHelloBody(body []byte) (*ClientHello, error) {
	r := &reader{b: body}
	h := &ClientHello{}
	h.LegacyVersion = uint16(r.u16())
	h.Random = r.take(randomLen)
	if r.short {
		return nil, errShortHello
	}
	if n := r.u8(); n > maxSessionIDLen {
		return nil, fmt.Errorf("parse client hello: session id length %d exceeds %d", n, maxSessionIDLen)
	} else {
		h.SessionID = r.take(n)
	}
	if r.short {
		return nil, errShortHello
	}
	n := r.u16()
	if !r.short && (n == 0 || n%2 != 0) {
		return nil, fmt.Errorf("parse client hello: cipher suites length %d is zero or odd", n)
	}
	suites := r.take(n)
	if r.short {
		return nil, errShortHello
	}
	h.CipherSuites = u16s(suites)
	n = r.u8()
	if !r.short && n == 0 {
		return nil, errors.New("parse client hello: no compression methods")
	}
	h.CompressionMethods = r.take(n)
	if r.short {
		return nil, errShortHello
	}
	if len(r.b) == 0 {
		return h, nil // no extensions block (RFC 5246 7.4.1.2)
	}
	exts := r.vec16()
	if r.short {
		return nil, errShortHello
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("parse client hello: %d bytes after the extensions", len(r.b))
	}
	h.Extensions = []uint16{}
	h.ExtensionData = [][]byte{}
	er := &reader{b: exts}
	for len(er.b) > 0 {
		typ := uint16(er.u16())
		data := er.vec16()
		if er.short {
			return nil, errors.New("parse client hello: extension overruns the extensions block")
		}
		h.Extensions = append(h.Extensions, typ)
		h.ExtensionData = append(h.ExtensionData, data)
		if err := h.decodeExtension(typ, data); err != nil {
			return nil, fmt.Errorf("parse client hello: extension %#04x: %w", typ, err)
		}
	}
	return h, nil
}

var errExtensionSyntax = errors.New("malformed")

// decodeExtension fills the decoded fields from one extension. Extensions
// it does not know are kept only as raw bytes.
func (h *ClientHello) decodeExtension(typ uint16, data []byte) error {
	r := &reader{b: data}
	switch typ {
	case extServerName:
		list := r.vec16()
		if r.short || len(r.b) != 0 || len(list) == 0 {
			return errExtensionSyntax
		}
		lr := &reader{b: list}
		for len(lr.b) > 0 {
			nameType := lr.u8()
			name := lr.vec16()
			if lr.short {
				return errExtensionSyntax
			}
			if nameType == 0 && h.SNI == "" {
				h.SNI = string(name)
			}
		}
	case extALPN:
		list := r.vec16()
		if r.short || len(r.b) != 0 || len(list) == 0 {
			return errExtensionSyntax
		}
		lr := &reader{b: list}
		for len(lr.b) > 0 {
			name := lr.vec8()
			if lr.short {
				return errExtensionSyntax
			}
			h.ALPN = append(h.ALPN, string(name))
		}
	case extSignatureAlgorithms, extSupportedGroups:
		list := r.vec16()
		if r.short || len(r.b) != 0 || len(list)%2 != 0 {
			return errExtensionSyntax
		}
		if typ == extSignatureAlgorithms {
			h.SignatureAlgorithms = u16s(list)
		} else {
			h.SupportedGroups = u16s(list)
		}
	case extSupportedVersions:
		list := r.vec8()
		if r.short || len(r.b) != 0 || len(list)%2 != 0 {
			return errExtensionSyntax
		}
		h.SupportedVersions = u16s(list)
	case extKeyShare:
		list := r.vec16()
		if r.short || len(r.b) != 0 {
			return errExtensionSyntax
		}
		lr := &reader{b: list}
		groups := []uint16{}
		for len(lr.b) > 0 {
			g := lr.u16()
			lr.vec16()
			if lr.short {
				return errExtensionSyntax
			}
			groups = append(groups, uint16(g))
		}
		h.KeyShareGroups = groups
	case extECH, extESNI:
		h.ECH = true
	}
	return nil
}

// u16s decodes a list of big-endian uint16s; len(p) is even.
func u16s(p []byte) []uint16 {
	out := make([]uint16, len(p)/2)
	for i := range out {
		out[i] = uint16(p[2*i])<<8 | uint16(p[2*i+1])
	}
	return out
}

// Marshal encodes h as TLS records: the handshake message built from
// LegacyVersion, Random, SessionID, CipherSuites, CompressionMethods,
// Extensions and ExtensionData (the decoded fields such as SNI are not
// read), split into records of at most 2^14 bytes with RecordVersion. For
// a hello parsed from a single record, Marshal returns the bytes parsed.
func (h *ClientHello) Marshal() ([]byte, error) {
	if len(h.Random) != randomLen {
		return nil, fmt.Errorf("marshal client hello: random is %d bytes, want %d", len(h.Random), randomLen)
	}
	if len(h.SessionID) > maxSessionIDLen {
		return nil, fmt.Errorf("marshal client hello: session id is %d bytes", len(h.SessionID))
	}
	if len(h.CipherSuites) == 0 || len(h.CipherSuites) > 0x7fff {
		return nil, fmt.Errorf("marshal client hello: %d cipher suites", len(h.CipherSuites))
	}
	if len(h.CompressionMethods) == 0 || len(h.CompressionMethods) > 0xff {
		return nil, fmt.Errorf("marshal client hello: %d compression methods", len(h.CompressionMethods))
	}
	if len(h.Extensions) != len(h.ExtensionData) {
		return nil, errors.New("marshal client hello: Extensions and ExtensionData differ in length")
	}
	body := make([]byte, 0, 512)
	body = append(body, byte(h.LegacyVersion>>8), byte(h.LegacyVersion))
	body = append(body, h.Random...)
	body = append(body, byte(len(h.SessionID)))
	body = append(body, h.SessionID...)
	body = append16(body, 2*len(h.CipherSuites))
	for _, c := range h.CipherSuites {
		body = append(body, byte(c>>8), byte(c))
	}
	body = append(body, byte(len(h.CompressionMethods)))
	body = append(body, h.CompressionMethods...)
	if h.Extensions != nil {
		start := len(body)
		body = append(body, 0, 0)
		for i, typ := range h.Extensions {
			d := h.ExtensionData[i]
			if len(d) > 0xffff {
				return nil, fmt.Errorf("marshal client hello: extension %#04x is %d bytes", typ, len(d))
			}
			body = append(body, byte(typ>>8), byte(typ))
			body = append16(body, len(d))
			body = append(body, d...)
		}
		n := len(body) - start - 2
		if n > 0xffff {
			return nil, fmt.Errorf("marshal client hello: extensions are %d bytes", n)
		}
		body[start], body[start+1] = byte(n>>8), byte(n)
	}
	msg := append([]byte{handshakeTypeHello, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}, body...)
	out := make([]byte, 0, len(msg)+recordHeaderLen*(1+len(msg)/maxRecordPayload))
	for len(msg) > 0 {
		frag := msg[:min(len(msg), maxRecordPayload)]
		msg = msg[len(frag):]
		out = append(out, recordTypeHandshake, byte(h.RecordVersion>>8), byte(h.RecordVersion))
		out = append16(out, len(frag))
		out = append(out, frag...)
	}
	return out, nil
}

func append16(b []byte, n int) []byte { return append(b, byte(n>>8), byte(n)) }

// isGREASE reports whether v is one of the 16 GREASE values of RFC 8701
// (0x0a0a, 0x1a1a, ..., 0xfafa).
func isGREASE(v uint16) bool { return v&0x0f0f == 0x0a0a && v>>8 == v&0xff }
