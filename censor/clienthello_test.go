package censor

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/hex"
	"hash/crc32"
	"net"
	"os"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// handBuiltHello is a TLS 1.2 ClientHello written out by hand.
var handBuiltHello = strings.Join([]string{
	"16 0301 005e", // record: handshake, TLS 1.0 record version, 94 bytes
	"01 00005a",    // handshake: client_hello, 90 bytes
	"0303",         // legacy_version TLS 1.2
	"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", // random
	"00",             // session_id: empty
	"0004 c02f 0035", // cipher_suites
	"01 00",          // compression_methods: null
	"002d",           // extensions: 45 bytes
	"0000 0010 000e 00 000b 6578616d706c652e636f6d", // server_name: host_name "example.com"
	"0010 000b 0009 08 687474702f312e31",            // ALPN: "http/1.1"
	"000d 0006 0004 0403 0804",                      // signature_algorithms
}, "")

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseClientHelloHandBuilt(t *testing.T) {
	b := mustHex(t, handBuiltHello)
	h, err := ParseClientHello(append(b, 0x17, 0x03, 0x03)) // trailing bytes are not the hello's
	if err != nil {
		t.Fatal(err)
	}
	random := make([]byte, 32)
	for i := range random {
		random[i] = byte(i)
	}
	want := &ClientHello{
		RecordVersion:       0x0301,
		LegacyVersion:       0x0303,
		Random:              random,
		SessionID:           []byte{},
		CipherSuites:        []uint16{0xc02f, 0x0035},
		CompressionMethods:  []byte{0},
		Extensions:          []uint16{0x0000, 0x0010, 0x000d},
		ExtensionData:       [][]byte{b[58:74], b[78:89], b[93:99]},
		SNI:                 "example.com",
		ALPN:                []string{"http/1.1"},
		SignatureAlgorithms: []uint16{0x0403, 0x0804},
		Len:                 len(b),
	}
	if !reflect.DeepEqual(h, want) {
		t.Errorf("got  %+v\nwant %+v", h, want)
	}
	// SHA-256("0035,c02f") and SHA-256("000d_0403,0804") start with
	// 1584f0a67932 and ef95ca21a004.
	if got, want := h.JA4(), "t12d0203h1_1584f0a67932_ef95ca21a004"; got != want {
		t.Errorf("JA4 = %s, want %s", got, want)
	}
	if got, want := h.JA4R(), "t12d0203h1_0035,c02f_000d_0403,0804"; got != want {
		t.Errorf("JA4R = %s, want %s", got, want)
	}
	if h.ECH {
		t.Error("ECH = true")
	}
	m, err := h.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m, b) {
		t.Errorf("Marshal = %x, want %x", m, b)
	}
}

// splitRecords re-frames the handshake message carried by b into records
// of at most n bytes.
func splitRecords(t testing.TB, b []byte, n int) []byte {
	t.Helper()
	h, err := ParseClientHello(b)
	if err != nil {
		t.Fatal(err)
	}
	one, err := h.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	msg := one[recordHeaderLen:]
	var out []byte
	for len(msg) > 0 {
		frag := msg[:min(n, len(msg))]
		msg = msg[len(frag):]
		out = append(out, recordTypeHandshake, 3, 1, byte(len(frag)>>8), byte(len(frag)))
		out = append(out, frag...)
	}
	return out
}

func chromiumHello(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(chromiumHelloFile)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseClientHelloRecords(t *testing.T) {
	b := chromiumHello(t)
	want, err := ParseClientHello(b)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{1, 7, 100, 512, 1000, 1 << 14} {
		split := splitRecords(t, b, n)
		got, err := ParseClientHello(split)
		if err != nil {
			t.Fatalf("records of %d: %v", n, err)
		}
		if got.Len != len(split) {
			t.Errorf("records of %d: Len = %d, want %d", n, got.Len, len(split))
		}
		got.Len = want.Len
		if !reflect.DeepEqual(got, want) {
			t.Errorf("records of %d: parsed differently", n)
		}
		// Every proper prefix is a short hello, never an error.
		for k := range split {
			if _, err := ParseClientHello(split[:k]); !IsShortHello(err) {
				t.Fatalf("records of %d: prefix of %d bytes: got %v, want a short hello", n, k, err)
			}
		}
	}
}

func TestParseClientHelloErrors(t *testing.T) {
	hb := mustHex(t, handBuiltHello)
	patch := func(off int, v ...byte) []byte {
		b := slices.Clone(hb)
		copy(b[off:], v)
		return b
	}
	tests := []struct {
		name string
		in   []byte
	}{
		{"application-data", []byte{0x17}},
		{"http", []byte("GET / HTTP/1.1\r\n")},
		{"record-major", []byte{0x16, 0x04}},
		{"empty-record", []byte{0x16, 0x03, 0x01, 0x00, 0x00}},
		{"record-too-long", []byte{0x16, 0x03, 0x01, 0x40, 0x01}},
		{"server-hello", []byte{0x16, 0x03, 0x01, 0x00, 0x04, 0x02}},
		{"hello-too-long", []byte{0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x03, 0x00, 0x00}},
		{"session-id-33", patch(43, 33)},
		{"odd-cipher-suites", patch(44, 0x00, 0x03)},
		{"no-cipher-suites", patch(44, 0x00, 0x00)},
		{"no-compression", patch(50, 0x00)},
		{"extensions-short-of-body", patch(52, 0x00, 0x2c)},
		{"extension-overrun", patch(91, 0x00, 0xff)},
		{"bad-server-name", patch(58, 0x00, 0x0f)},
		{"bad-alpn", patch(78, 0x00, 0x0a)},
		{"odd-signature-algorithms", patch(93, 0x00, 0x03)},
		{"second-record-not-handshake", append(splitRecords(t, hb, 10)[:15], 0x17)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseClientHello(tt.in)
			if err == nil || IsShortHello(err) {
				t.Fatalf("got %v, want an error that is not a short hello", err)
			}
			// No continuation of the stream can make it a hello.
			more := append(slices.Clone(tt.in), hb...)
			if _, err2 := ParseClientHello(more); err2 == nil || IsShortHello(err2) {
				t.Errorf("with bytes appended: got %v, want an error", err2)
			}
		})
	}
}

// tlsHello returns the first bytes a crypto/tls client sends with cfg.
func tlsHello(t testing.TB, cfg *tls.Config) []byte {
	t.Helper()
	c, s := net.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tls.Client(c, cfg).HandshakeContext(ctx)
	}()
	defer func() {
		cancel()
		s.Close()
		c.Close()
		<-done
	}()
	var got []byte
	buf := make([]byte, 4096)
	for {
		n, err := s.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf[:n]...)
		h, err := ParseClientHello(got)
		if err == nil {
			return got[:h.Len]
		}
		if !IsShortHello(err) {
			t.Fatal(err)
		}
	}
}

func TestParseCryptoTLSHellos(t *testing.T) {
	tests := []struct {
		name     string
		cfg      *tls.Config
		sni      string
		alpn     []string
		versions []uint16
		ja4      string // a prefix
	}{
		{"tls13-h2", &tls.Config{ServerName: "example.com", NextProtos: []string{"h2", "http/1.1"}},
			"example.com", []string{"h2", "http/1.1"}, []uint16{tls.VersionTLS13, tls.VersionTLS12}, "t13d"},
		{"tls12-only", &tls.Config{ServerName: "example.org", MaxVersion: tls.VersionTLS12},
			"example.org", nil, []uint16{tls.VersionTLS12}, "t12d"},
		{"ip-no-sni", &tls.Config{ServerName: "127.0.0.1", InsecureSkipVerify: true, NextProtos: []string{"x"}},
			"", []string{"x"}, []uint16{tls.VersionTLS13, tls.VersionTLS12}, "t13i"},
	}
	chromiumJA4 := chromiumWantJA4(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h, err := ParseClientHello(tlsHello(t, tt.cfg))
			if err != nil {
				t.Fatal(err)
			}
			if h.SNI != tt.sni {
				t.Errorf("SNI = %q, want %q", h.SNI, tt.sni)
			}
			if !slices.Equal(h.ALPN, tt.alpn) {
				t.Errorf("ALPN = %q, want %q", h.ALPN, tt.alpn)
			}
			if !slices.Equal(h.SupportedVersions, tt.versions) {
				t.Errorf("SupportedVersions = %x, want %x", h.SupportedVersions, tt.versions)
			}
			if !strings.HasPrefix(h.JA4(), tt.ja4) {
				t.Errorf("JA4 = %s, want prefix %s", h.JA4(), tt.ja4)
			}
			if h.JA4() == chromiumJA4 {
				t.Errorf("crypto/tls has Chromium's JA4 %s", h.JA4())
			}
			if len(h.KeyShareGroups) == 0 && tt.versions[0] == tls.VersionTLS13 {
				t.Error("no key shares in a TLS 1.3 hello")
			}
		})
	}
}

// TestParseClientHelloAllocations: the memory a parse takes is bounded by
// the input, whatever lengths the input claims.
func TestParseClientHelloAllocations(t *testing.T) {
	chromium := chromiumHello(t)
	tinyRecords := splitRecords(t, chromium, 1)
	// A record of 16 KiB that says it starts a 128 KiB hello, and a
	// 4-byte record saying the same followed by many 1-byte records.
	claimsHuge := []byte{0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x02, 0x00, 0x00}
	claimsHugeRecords := []byte{0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x02, 0x00, 0x00}
	for range 2000 {
		claimsHugeRecords = append(claimsHugeRecords, 0x16, 0x03, 0x01, 0x00, 0x01, 0xaa)
	}
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"chromium", chromium},
		{"chromium-1-byte-records", tinyRecords},
		{"claims-128k", claimsHuge},
		{"claims-128k-many-records", claimsHugeRecords[:len(claimsHugeRecords)-1]},
	} {
		const runs = 50
		perParse := allocatedBy(func() {
			for range runs {
				ParseClientHello(tc.in)
			}
		}) / runs
		if limit := allocBound(len(tc.in)); perParse > limit {
			t.Errorf("%s: %d bytes allocated per parse of %d bytes, want at most %d", tc.name, perParse, len(tc.in), limit)
		}
	}
}

// allocBound is the most a parse of n bytes may allocate: the body's
// copy, the decoded lists (a 2-byte value becomes a 2-byte uint16, a
// 4-byte extension header a 26-byte type and slice header) and a few small
// fixed objects.
func allocBound(n int) uint64 { return uint64(16*n + 4096) }

// allocatedBy is the number of heap bytes f allocates (the whole process's
// while f runs: run it when no other test is).
func allocatedBy(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// fuzzSeeds are the vectors' hellos, Chromium's and crypto/tls's.
func fuzzSeeds(f *testing.F) [][]byte {
	resumed, err := os.ReadFile(chromiumResumedHelloFile)
	if err != nil {
		f.Fatal(err)
	}
	seeds := [][]byte{mustHex(f, handBuiltHello), chromiumHello(f), resumed, splitRecords(f, chromiumHello(f), 300)}
	for _, v := range loadJA4Vectors(f).Vectors {
		hb := helloBuilder{legacy: 0x0303, versions: hexU16s(f, v.SupportedVersions), sni: v.SNI, alpn: v.ALPN,
			ciphers: hexU16s(f, v.Ciphers), exts: hexU16s(f, v.Extensions), sigs: hexU16s(f, v.SignatureAlgorithms)}
		_, b := hb.wire(f)
		seeds = append(seeds, b)
	}
	seeds = append(seeds,
		tlsHello(f, &tls.Config{ServerName: "example.com", NextProtos: []string{"h2"}}),
		tlsHello(f, &tls.Config{ServerName: "example.com", MaxVersion: tls.VersionTLS12}))
	return seeds
}

// FuzzParseClientHello checks that ParseClientHello never panics and that
//   - a parsed hello marshals to records that parse to the same hello, and
//     to the very input bytes when the input was one record;
//   - every proper prefix of a parsed hello is a short hello;
//   - a short hello's prefixes are short hellos too;
//   - an error other than a short hello stays an error whatever follows;
//   - the memory a parse allocates is bounded by the input's length.
func FuzzParseClientHello(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseClientHello(b)
		// Measuring stops the world twice, so it is done for one input in
		// 16 (chosen by the input, so a failure reproduces). The fuzzing
		// engine allocates in the background (a few KiB seen), hence the
		// slack; a parse allocating what a record or a hello claims (16 or
		// 128 KiB) still shows.
		if crc32.ChecksumIEEE(b)%16 == 0 {
			if n, limit := allocatedBy(func() { ParseClientHello(b) }), allocBound(len(b))+8<<10; n > limit {
				t.Fatalf("parsing %d bytes allocated %d bytes, more than %d", len(b), n, limit)
			}
		}
		switch {
		case err == nil:
			m, err := h.Marshal()
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			h2, err := ParseClientHello(m)
			if err != nil {
				t.Fatalf("parse marshaled: %v", err)
			}
			h2.Len = h.Len
			if !reflect.DeepEqual(h, h2) {
				t.Fatalf("marshal round trip changed the hello:\n%+v\n%+v", h, h2)
			}
			if recLen := int(b[3])<<8 | int(b[4]); recordHeaderLen+recLen == h.Len && b[2] == m[2] && h.Len == len(m) && !bytes.Equal(m, b[:h.Len]) {
				t.Fatalf("one-record hello marshals to %x, want %x", m, b[:h.Len])
			}
			for _, k := range []int{0, 1, h.Len / 2, h.Len - 1} {
				if _, err := ParseClientHello(b[:k]); !IsShortHello(err) {
					t.Fatalf("prefix of %d of a %d-byte hello: got %v, want short", k, h.Len, err)
				}
			}
			_ = h.JA4()
		case IsShortHello(err):
			for _, k := range []int{0, len(b) / 2, max(0, len(b)-1)} {
				if _, err := ParseClientHello(b[:k]); !IsShortHello(err) {
					t.Fatalf("prefix of %d of a short hello: got %v, want short", k, err)
				}
			}
		default:
			more := append(slices.Clone(b), mustHex(t, handBuiltHello)...)
			if _, err2 := ParseClientHello(more); err2 == nil || IsShortHello(err2) {
				t.Fatalf("error %v became %v with bytes appended", err, err2)
			}
		}
	})
}

func BenchmarkParseClientHelloJA4(b *testing.B) {
	in := chromiumHello(b)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		h, err := ParseClientHello(in)
		if err != nil {
			b.Fatal(err)
		}
		_ = h.JA4()
	}
}

func BenchmarkParseClientHello(b *testing.B) {
	in := chromiumHello(b)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseClientHello(in); err != nil {
			b.Fatal(err)
		}
	}
}
