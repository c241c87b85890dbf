package censor

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"strings"
	"testing"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		in   string
		want Kind
	}{
		{"", KindNone},
		{"\x16\x03\x01\x02\x00", KindTLS},
		{"\x17\x03\x03", KindTLS},
		{"\x16\x03", KindOther},
		{"\x16\x02\x01", KindOther},
		{"GET / HTTP/1.1\r\n", KindHTTP},
		{"OPTIONS * HTTP/1.1\r\n", KindHTTP},
		{"GET", KindOther},
		{"get / HTTP/1.1", KindOther},
		{"WA\x04\x01", KindOther},
	}
	for _, tt := range tests {
		if got := Classify([]byte(tt.in)); got != tt.want {
			t.Errorf("Classify(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestHTTPHost(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"GET / HTTP/1.1\r\nHost: Example.COM\r\n\r\n", "example.com", true},
		{"GET / HTTP/1.1\r\nUser-Agent: x\r\nhost:example.com:8080\r\n\r\n", "example.com", true},
		{"GET / HTTP/1.1\nHOST: \t a.example. \n\n", "a.example", true},
		{"GET / HTTP/1.1\r\nHost: [2001:db8::1]:443\r\n\r\n", "2001:db8::1", true},
		{"GET / HTTP/1.1\r\nHost: cut.exa", "cut.exa", true},
		{"GET / HTTP/1.1\r\n\r\nHost: body.example\r\n", "", false},
		{"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", "", false},
		{"GET / HTTP/1.1\r\nHost:\r\n\r\n", "", false},
		{"GET / HTTP/1.1", "", false},
		{"\x16\x03\x01Host: x", "", false},
	}
	for _, tt := range tests {
		got, ok := HTTPHost([]byte(tt.in))
		if got != tt.want || ok != tt.ok {
			t.Errorf("HTTPHost(%q) = %q, %v, want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestNewFlow(t *testing.T) {
	hello := goClientHello(t, "Sni.Example")
	f := NewFlow(clientN(1), testServer, (&FakeClock{}).Now(), hello)
	if f.Kind != KindTLS || f.Hello == nil || f.Host != "sni.example" || f.JA4() == "" {
		t.Errorf("flow of a ClientHello: kind %s, hello %v (%v), host %q, ja4 %q", f.Kind, f.Hello != nil, f.HelloErr, f.Host, f.JA4())
	}
	big := bytes.Repeat([]byte{1}, MaxFirst+10)
	if f := NewFlow(clientN(1), testServer, (&FakeClock{}).Now(), big); len(f.First) != MaxFirst {
		t.Errorf("first payload kept %d bytes, want %d", len(f.First), MaxFirst)
	}
}

// FuzzFirstBytes checks the parsers of first payloads: no panic, and
// consistent results.
func FuzzFirstBytes(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"))
	f.Add([]byte("POST /x HTTP/1.1\nhost: [::1]:80\n\n"))
	f.Add([]byte{0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00})
	f.Add([]byte("WA\x04\x01\x00\x00\x22"))
	f.Add(bytes.Repeat([]byte{0xaa}, 100))
	b, err := os.ReadFile(fetVectorsFile)
	if err != nil {
		f.Fatal(err)
	}
	var v fetVectors
	if err := json.Unmarshal(b, &v); err != nil {
		f.Fatal(err)
	}
	for _, vec := range v.Vectors {
		p, err := hex.DecodeString(vec.Hex)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		k := Classify(b)
		if (len(b) == 0) != (k == KindNone) {
			t.Fatalf("Classify(%q) = %s", b, k)
		}
		if host, ok := HTTPHost(b); ok {
			if k != KindHTTP {
				t.Fatalf("host %q from a %s payload", host, k)
			}
			if host == "" || strings.ContainsAny(host, " \r\n\t/") || host != strings.ToLower(host) {
				t.Fatalf("HTTPHost(%q) = %q", b, host)
			}
			if !bytes.Contains(bytes.ToLower(b), []byte(strings.TrimSuffix(host, "."))) {
				t.Fatalf("host %q is not in the payload", host)
			}
		}
		ex := FETExemption(b)
		s := MeasureFET(b)
		if s.Printable > s.Len || s.LongestRun > s.Printable || s.PrintablePrefix > s.LongestRun {
			t.Fatalf("inconsistent stats %+v", s)
		}
		suspicious := len(b) > 0 && s.Popcount > 3.4 && s.Popcount < 4.6 && s.PrintablePrefix < 6 &&
			2*s.Printable <= s.Len && s.LongestRun <= 20 && k != KindTLS && !hasFETHTTPPrefix(b)
		if suspicious != (ex == "") {
			t.Fatalf("FETExemption(%x) = %q with stats %+v", b, ex, s)
		}
		fl := NewFlow(clientN(1), testServer, (&FakeClock{}).Now(), b)
		if fl.Kind != k || len(fl.First) != min(len(b), MaxFirst) {
			t.Fatalf("NewFlow: kind %s, %d bytes", fl.Kind, len(fl.First))
		}
	})
}
