package censor

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strings"
)

// JA4 is FoxIO's TLS client fingerprint (github.com/FoxIO-LLC/ja4,
// technical_details/JA4.md), computed over TCP ("t"):
//
//	JA4 = a_b_c
//	a = "t" version(2) sni(1) ciphers(2) extensions(2) alpn(2)   e.g. t13d1516h2
//	b = first 12 hex of SHA-256("002f,0035,...")      the cipher suites, sorted
//	c = first 12 hex of SHA-256("0005,000a,..._0403,0804,...")
//	    the extensions sorted, without SNI (0000) and ALPN (0010), then "_"
//	    and the signature algorithms in wire order (no "_" if there are none)
//
// GREASE values are ignored everywhere. version is the highest value in
// supported_versions, or legacy_version without that extension ("13",
// "12", "11", "10", "s3", "s2", "d1", "d2", "d3", else "00"); sni is "d"
// if the server_name extension is present, else "i"; the counts are two
// digits, capped at 99, and include SNI and ALPN; alpn is the first and
// last character of the first ALPN value ("00" without one), or the first
// and last hex digit of that value when its first or last byte is not
// ASCII alphanumeric. An empty list hashes to "000000000000". Because the
// lists are sorted, JA4 does not change when Chromium shuffles its
// extensions.
func (h *ClientHello) JA4() string { return h.ja4(false, false) }

// JA4R is JA4 with the sorted lists in clear instead of hashed ("JA4_r").
func (h *ClientHello) JA4R() string { return h.ja4(false, true) }

// JA4O is JA4 over the lists in wire order, SNI and ALPN included ("JA4_o").
// It changes with every shuffle of the extensions.
func (h *ClientHello) JA4O() string { return h.ja4(true, false) }

// JA4RO is JA4O with the lists in clear ("JA4_ro").
func (h *ClientHello) JA4RO() string { return h.ja4(true, true) }

func (h *ClientHello) ja4(original, raw bool) string {
	ciphers := withoutGREASE(h.CipherSuites)
	exts := withoutGREASE(h.Extensions)
	sigs := withoutGREASE(h.SignatureAlgorithms)

	var a strings.Builder
	a.WriteByte('t')
	a.WriteString(ja4Version(h))
	if slices.Contains(exts, extServerName) {
		a.WriteByte('d')
	} else {
		a.WriteByte('i')
	}
	a.WriteString(ja4Count(len(ciphers)))
	a.WriteString(ja4Count(len(exts)))
	a.WriteString(ja4ALPN(h.ALPN))

	if !original {
		slices.Sort(ciphers)
		exts = slices.DeleteFunc(exts, func(e uint16) bool { return e == extServerName || e == extALPN })
		slices.Sort(exts)
	}
	b := hexList(ciphers)
	c := hexList(exts)
	if len(sigs) > 0 {
		c += "_" + hexList(sigs)
	}
	if raw {
		return a.String() + "_" + b + "_" + c
	}
	return a.String() + "_" + ja4Hash(b, len(ciphers)) + "_" + ja4Hash(c, len(exts))
}

func withoutGREASE(v []uint16) []uint16 {
	out := make([]uint16, 0, len(v))
	for _, x := range v {
		if !isGREASE(x) {
			out = append(out, x)
		}
	}
	return out
}

// ja4Version is the two-character version of JA4's part a.
func ja4Version(h *ClientHello) string {
	v := h.LegacyVersion
	if slices.Contains(h.Extensions, extSupportedVersions) {
		v = 0
		for _, x := range h.SupportedVersions {
			if !isGREASE(x) && x > v {
				v = x
			}
		}
	}
	switch v {
	case 0x0304:
		return "13"
	case 0x0303:
		return "12"
	case 0x0302:
		return "11"
	case 0x0301:
		return "10"
	case 0x0300:
		return "s3"
	case 0x0002:
		return "s2"
	case 0xfeff:
		return "d1"
	case 0xfefd:
		return "d2"
	case 0xfefc:
		return "d3"
	}
	return "00"
}

func ja4Count(n int) string {
	n = min(n, 99)
	return string([]byte{'0' + byte(n/10), '0' + byte(n%10)})
}

// ja4ALPN is the two-character ALPN of JA4's part a.
func ja4ALPN(alpn []string) string {
	if len(alpn) == 0 || alpn[0] == "" {
		return "00"
	}
	v := alpn[0]
	first, last := v[0], v[len(v)-1]
	if isAlnum(first) && isAlnum(last) {
		return string([]byte{first, last})
	}
	x := hex.EncodeToString([]byte(v))
	return string([]byte{x[0], x[len(x)-1]})
}

func isAlnum(c byte) bool {
	return '0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z'
}

// hexList writes v as four lower-case hex digits each, comma-separated.
func hexList(v []uint16) string {
	const digits = "0123456789abcdef"
	b := make([]byte, 0, 5*len(v))
	for i, x := range v {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, digits[x>>12], digits[x>>8&0xf], digits[x>>4&0xf], digits[x&0xf])
	}
	return string(b)
}

// ja4Hash is the first 12 hex digits of SHA-256(s), or twelve zeros when
// the list s was made from is empty.
func ja4Hash(s string, n int) string {
	if n == 0 {
		return "000000000000"
	}
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:6])
}
