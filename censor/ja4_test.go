package censor

import (
	"encoding/hex"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"
)

// ja4Vectors is testdata/tls-ja4-vectors.json.
type ja4Vectors struct {
	Vectors []ja4Vector `json:"vectors"`
	ALPN    []struct {
		Source string `json:"source"`
		Hex    string `json:"hex"`
		Want   string `json:"want"`
	} `json:"alpn"`
}

type ja4Vector struct {
	Name                string   `json:"name"`
	Source              string   `json:"source"`
	LegacyVersion       string   `json:"legacy_version"`
	SupportedVersions   string   `json:"supported_versions"`
	SNI                 string   `json:"sni"`
	ALPN                []string `json:"alpn"`
	Ciphers             string   `json:"ciphers"`
	Extensions          string   `json:"extensions"`
	SignatureAlgorithms string   `json:"signature_algorithms"`
	JA4                 string   `json:"ja4"`
	JA4R                string   `json:"ja4_r"`
	JA4O                string   `json:"ja4_o"`
	JA4RO               string   `json:"ja4_ro"`
}

func loadJA4Vectors(t testing.TB) ja4Vectors {
	t.Helper()
	b, err := os.ReadFile("testdata/tls-ja4-vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v ja4Vectors
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Vectors) == 0 || len(v.ALPN) == 0 {
		t.Fatal("no vectors")
	}
	return v
}

func hexU16s(t testing.TB, s string) []uint16 {
	t.Helper()
	if s == "" {
		return nil
	}
	var out []uint16
	for f := range strings.SplitSeq(s, ",") {
		x, err := strconv.ParseUint(f, 16, 16)
		if err != nil {
			t.Fatalf("bad hex list %q: %v", s, err)
		}
		out = append(out, uint16(x))
	}
	return out
}

// helloBuilder makes ClientHellos for tests: the lists as given, and for
// each extension a body that the parser accepts.
type helloBuilder struct {
	legacy, record uint16
	versions       []uint16
	sni            string
	alpn           []string
	ciphers        []uint16
	exts           []uint16
	sigs, groups   []uint16
}

func u16Bytes(v []uint16) []byte {
	var b []byte
	for _, x := range v {
		b = append(b, byte(x>>8), byte(x))
	}
	return b
}

func vec16(p []byte) []byte { return append([]byte{byte(len(p) >> 8), byte(len(p))}, p...) }

func (hb helloBuilder) hello() *ClientHello {
	h := &ClientHello{
		RecordVersion:      hb.record,
		LegacyVersion:      hb.legacy,
		Random:             make([]byte, 32),
		SessionID:          make([]byte, 32),
		CipherSuites:       hb.ciphers,
		CompressionMethods: []byte{0},
	}
	for i := range h.Random {
		h.Random[i] = byte(i)
		h.SessionID[i] = byte(0x80 + i)
	}
	if h.RecordVersion == 0 {
		h.RecordVersion = 0x0301
	}
	for _, e := range hb.exts {
		var data []byte
		switch e {
		case extServerName:
			data = vec16(append([]byte{0}, vec16([]byte(hb.sni))...))
		case extALPN:
			var l []byte
			for _, p := range hb.alpn {
				l = append(l, byte(len(p)))
				l = append(l, p...)
			}
			data = vec16(l)
		case extSignatureAlgorithms:
			data = vec16(u16Bytes(hb.sigs))
		case extSupportedGroups:
			data = vec16(u16Bytes(hb.groups))
		case extSupportedVersions:
			v := u16Bytes(hb.versions)
			data = append([]byte{byte(len(v))}, v...)
		case extKeyShare:
			data = vec16(append([]byte{0x00, 0x1d}, vec16(make([]byte, 32))...))
		}
		h.Extensions = append(h.Extensions, e)
		h.ExtensionData = append(h.ExtensionData, data)
	}
	return h
}

// wire marshals, then parses the hello, as a censor would see it.
func (hb helloBuilder) wire(t testing.TB) (*ClientHello, []byte) {
	t.Helper()
	b, err := hb.hello().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	h, err := ParseClientHello(b)
	if err != nil {
		t.Fatalf("ParseClientHello: %v", err)
	}
	return h, b
}

func TestJA4Vectors(t *testing.T) {
	vs := loadJA4Vectors(t)
	for _, v := range vs.Vectors {
		t.Run(v.Name, func(t *testing.T) {
			t.Parallel()
			legacy := hexU16s(t, v.LegacyVersion)
			hb := helloBuilder{
				legacy:   legacy[0],
				versions: hexU16s(t, v.SupportedVersions),
				sni:      v.SNI,
				alpn:     v.ALPN,
				ciphers:  hexU16s(t, v.Ciphers),
				exts:     hexU16s(t, v.Extensions),
				sigs:     hexU16s(t, v.SignatureAlgorithms),
			}
			h, _ := hb.wire(t)
			if h.SNI != v.SNI {
				t.Errorf("SNI = %q, want %q", h.SNI, v.SNI)
			}
			for _, c := range []struct{ name, got, want string }{
				{"JA4", h.JA4(), v.JA4},
				{"JA4R", h.JA4R(), v.JA4R},
				{"JA4O", h.JA4O(), v.JA4O},
				{"JA4RO", h.JA4RO(), v.JA4RO},
			} {
				if c.want != "" && c.got != c.want {
					t.Errorf("%s = %s, want %s", c.name, c.got, c.want)
				}
			}
		})
	}
}

func TestJA4ALPN(t *testing.T) {
	vs := loadJA4Vectors(t)
	for _, v := range vs.ALPN {
		t.Run(v.Hex, func(t *testing.T) {
			t.Parallel()
			p, err := hex.DecodeString(v.Hex)
			if err != nil {
				t.Fatal(err)
			}
			hb := helloBuilder{legacy: 0x0303, ciphers: []uint16{0x1301}, exts: []uint16{extALPN}, alpn: []string{string(p), "h2"}}
			h, _ := hb.wire(t)
			if got := h.JA4()[8:10]; got != v.Want {
				t.Errorf("ALPN part of %s = %q, want %q", h.JA4(), got, v.Want)
			}
		})
	}
}

func TestJA4Parts(t *testing.T) {
	many := make([]uint16, 120)
	for i := range many {
		many[i] = uint16(0x0100 + i)
	}
	tests := []struct {
		name string
		hb   helloBuilder
		want string
	}{
		// Without supported_versions the version is legacy_version; no
		// SNI gives "i"; no ALPN "00"; no extensions at all gives a part
		// c of zeros. SHA-256("002f,0035") starts with f54dd463d39b.
		{"tls12-no-extensions", helloBuilder{legacy: 0x0303, ciphers: []uint16{0x0035, 0x002f}},
			"t12i020000_f54dd463d39b_000000000000"},
		// Only SNI and ALPN: both counted, neither hashed, so part c is
		// zeros too.
		{"only-sni-alpn", helloBuilder{legacy: 0x0303, ciphers: []uint16{0x0035, 0x002f}, exts: []uint16{extALPN, extServerName}, sni: "a.example", alpn: []string{"h2"}},
			"t12d0202h2_f54dd463d39b_000000000000"},
		// supported_versions wins over legacy_version, GREASE ignored;
		// SHA-256("002b") starts with b9a491fefe05.
		{"supported-versions", helloBuilder{legacy: 0x0301, versions: []uint16{0x0303, 0xfafa, 0x0302}, ciphers: []uint16{0x0035, 0x002f}, exts: []uint16{extSupportedVersions}},
			"t12i020100_f54dd463d39b_b9a491fefe05"},
		{"unknown-version", helloBuilder{legacy: 0x0305, ciphers: []uint16{0x0035, 0x002f}},
			"t00i020000_f54dd463d39b_000000000000"},
		// Counts are capped at 99.
		{"many-ciphers", helloBuilder{legacy: 0x0303, ciphers: many}, "t12i9900"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h, _ := tt.hb.wire(t)
			if got := h.JA4(); !strings.HasPrefix(got, tt.want) {
				t.Errorf("JA4 = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestIsGREASE(t *testing.T) {
	n := 0
	for v := range 1 << 16 {
		if isGREASE(uint16(v)) {
			n++
			if v&0xff != 0x0a+(v&0xf0) || v>>8 != v&0xff {
				t.Errorf("isGREASE(%#04x) = true", v)
			}
		}
	}
	if n != 16 {
		t.Errorf("%d GREASE values, want 16", n)
	}
}
