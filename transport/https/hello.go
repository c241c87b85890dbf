package https

import (
	"crypto/ecdh"
	"encoding/hex"
	"fmt"
	"io"
	"slices"

	utls "github.com/refraction-networking/utls"
)

// The ClientHello of Debian's Chromium 156 (censor/testdata/chromium-hello.bin,
// captured by go test ./censor -run 'TestChromiumHello$' -chromium-update),
// kept by hand: when Chromium changes its hello, TestHelloMatchesChromium
// fails and prints every list that differs; update the lists here to match
// (docs/transports.md section 4.2).
//
// What varies per connection, as in Chromium (BoringSSL): the GREASE values
// (RFC 8701) of the cipher suites, groups and key share, supported
// versions, signature algorithms and the two GREASE extensions (drawn by
// uTLS from Config.Rand, the two extensions always different); the order of
// every extension between the first and the last GREASE extension (a
// uniform permutation); and the GREASE encrypted_client_hello extension:
// its config id, its HPKE encapsulated key (a real X25519 public key) and
// its payload length (one of 144, 176, 208 or 240 bytes, random). The
// record carrying the hello has legacy_record_version 0x0301.
var (
	chromiumCipherSuites = []uint16{
		utls.GREASE_PLACEHOLDER,
		0x1301, 0x1302, 0x1303, // TLS 1.3: AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305
		0xc02b, 0xc02f, 0xc02c, 0xc030, // ECDHE-{ECDSA,RSA}-AES{128,256}-GCM
		0xcca9, 0xcca8, // ECDHE-{ECDSA,RSA}-ChaCha20-Poly1305
		0xc013, 0xc014, // ECDHE-RSA-AES{128,256}-CBC-SHA
		0x009c, 0x009d, 0x002f, 0x0035, // RSA-AES{128,256}-GCM, RSA-AES{128,256}-CBC-SHA
	}
	chromiumGroups = []utls.CurveID{
		utls.GREASE_PLACEHOLDER, utls.X25519MLKEM768, utls.X25519, utls.CurveP256, utls.CurveP384,
	}
	// chromiumSignatureAlgorithms follow a GREASE value of their own.
	chromiumSignatureAlgorithms = []utls.SignatureScheme{
		0x0904, 0x0905, 0x0906, // ML-DSA-44, -65, -87
		utls.ECDSAWithP256AndSHA256, utls.PSSWithSHA256, utls.PKCS1WithSHA256,
		utls.ECDSAWithP384AndSHA384, utls.PSSWithSHA384, utls.PKCS1WithSHA384,
		utls.PSSWithSHA512, utls.PKCS1WithSHA512,
	}
	chromiumALPN = []string{"h2", "http/1.1"}
	// chromiumTrustAnchors is the body of extension 0xca34
	// (draft-ietf-tls-trust-anchor-ids), the same on every connection.
	chromiumTrustAnchors = mustHex("00b80582df1302010582df1302060582df13020d0582df13020e0582df13020f0582df1302120582df1302130582df13021408839a648c9b2d010708839a648c9b2d010808839a648c9b2d010908839a648c9b2d010a08839a648c9b2d010b08839a648c9b2d010c08839a648c9b2d010d08839a648c9b2d011208839a648c9b2d011304d679090104d679090404d679090504d679090604d679090704d679090804d679090a04d679090b04d679090c04d679090d04d679090f")
	// chromiumECHPayloadLens are the GREASE ECH payload lengths BoringSSL
	// picks from: 32*{4..7} plus the 16-byte AES-128-GCM tag.
	chromiumECHPayloadLens = []int{144, 176, 208, 240}
)

// Extension code points the spec writes as raw bytes.
const (
	extTrustAnchors = 0xca34
	extECH          = 0xfe0d
)

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// chromiumSpec returns the spec of one connection's ClientHello, drawing
// its per-connection choices from r. Every list is a fresh copy: uTLS
// writes the GREASE values into them.
func chromiumSpec(r io.Reader) (*utls.ClientHelloSpec, error) {
	var rnd [4]byte
	if _, err := io.ReadFull(r, rnd[:]); err != nil {
		return nil, fmt.Errorf("build client hello: %w", err)
	}
	sigGREASE := utls.SignatureScheme(greaseValue(rnd[0]))
	ech, err := greaseECH(r, chromiumECHPayloadLens[int(rnd[1])%len(chromiumECHPayloadLens)])
	if err != nil {
		return nil, err
	}
	middle := []utls.TLSExtension{
		&utls.SNIExtension{},
		&utls.ExtendedMasterSecretExtension{},
		&utls.RenegotiationInfoExtension{Renegotiation: utls.RenegotiateOnceAsClient},
		&utls.SupportedCurvesExtension{Curves: slices.Clone(chromiumGroups)},
		&utls.SupportedPointsExtension{SupportedPoints: []byte{0}}, // uncompressed
		&utls.SessionTicketExtension{},
		&utls.ALPNExtension{AlpnProtocols: slices.Clone(chromiumALPN)},
		&utls.StatusRequestExtension{},
		&utls.SignatureAlgorithmsExtension{SupportedSignatureAlgorithms: append([]utls.SignatureScheme{sigGREASE}, chromiumSignatureAlgorithms...)},
		&utls.SCTExtension{},
		&utls.KeyShareExtension{KeyShares: []utls.KeyShare{
			{Group: utls.GREASE_PLACEHOLDER, Data: []byte{0}},
			{Group: utls.X25519MLKEM768},
			{Group: utls.X25519},
		}},
		&utls.PSKKeyExchangeModesExtension{Modes: []uint8{utls.PskModeDHE}},
		&utls.SupportedVersionsExtension{Versions: []uint16{utls.GREASE_PLACEHOLDER, utls.VersionTLS13, utls.VersionTLS12}},
		&utls.UtlsCompressCertExtension{Algorithms: []utls.CertCompressionAlgo{utls.CertCompressionBrotli}},
		&utls.ApplicationSettingsExtensionNew{SupportedProtocols: []string{"h2"}},
		&utls.GenericExtension{Id: extTrustAnchors, Data: slices.Clone(chromiumTrustAnchors)},
		&utls.GenericExtension{Id: extECH, Data: ech},
	}
	if err := shuffle(r, middle); err != nil {
		return nil, err
	}
	exts := make([]utls.TLSExtension, 0, len(middle)+2)
	exts = append(exts, &utls.UtlsGREASEExtension{})
	exts = append(exts, middle...)
	exts = append(exts, &utls.UtlsGREASEExtension{}) // uTLS gives the last one its 1-byte body
	return &utls.ClientHelloSpec{
		TLSVersMin:         utls.VersionTLS12,
		TLSVersMax:         utls.VersionTLS13,
		CipherSuites:       slices.Clone(chromiumCipherSuites),
		CompressionMethods: []byte{0},
		Extensions:         exts,
	}, nil
}

// greaseValue is BoringSSL's GREASE value for a random byte: 0x?a?a.
func greaseValue(b byte) uint16 {
	v := uint16(b&0xf0) | 0x0a
	return v<<8 | v
}

// greaseECH returns the body of a GREASE encrypted_client_hello
// extension (draft-ietf-tls-esni-22 section 6.2) as BoringSSL makes it:
//
//	type(1)=0 outer  kdf_id(2)=0x0001 HKDF-SHA256  aead_id(2)=0x0001 AES-128-GCM
//	config_id(1) random   enc<2>: an X25519 public key   payload<2>: random bytes
func greaseECH(r io.Reader, payloadLen int) ([]byte, error) {
	key, err := ecdh.X25519().GenerateKey(r)
	if err != nil {
		return nil, fmt.Errorf("build client hello: %w", err)
	}
	enc := key.PublicKey().Bytes()
	b := make([]byte, 0, 1+2+2+1+2+len(enc)+2+payloadLen)
	b = append(b, 0, 0, 1, 0, 1)
	var id [1]byte
	if _, err := io.ReadFull(r, id[:]); err != nil {
		return nil, fmt.Errorf("build client hello: %w", err)
	}
	b = append(b, id[0], 0, byte(len(enc)))
	b = append(b, enc...)
	b = append(b, byte(payloadLen>>8), byte(payloadLen))
	payload := make([]byte, payloadLen)
	if _, err := io.ReadFull(r, payload); err != nil {
		return nil, fmt.Errorf("build client hello: %w", err)
	}
	return append(b, payload...), nil
}

// shuffle permutes exts uniformly (Fisher-Yates), as BoringSSL permutes
// its extensions for every connection.
func shuffle(r io.Reader, exts []utls.TLSExtension) error {
	for i := len(exts) - 1; i > 0; i-- {
		j, err := uniform(r, i+1)
		if err != nil {
			return fmt.Errorf("build client hello: %w", err)
		}
		exts[i], exts[j] = exts[j], exts[i]
	}
	return nil
}

// uniform returns a uniform random number in [0, n), n <= 256.
func uniform(r io.Reader, n int) (int, error) {
	var b [1]byte
	limit := 256 - 256%n
	for {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, err
		}
		if int(b[0]) < limit {
			return int(b[0]) % n, nil
		}
	}
}
