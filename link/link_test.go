package link

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/links.json from the cases in this file")

// vectorFile is the layout of testdata/links.json. Keys are hex.
type vectorFile struct {
	Comment string        `json:"comment"`
	Valid   []validVector `json:"valid"`
	Invalid []badVector   `json:"invalid"`
}

type validVector struct {
	Name      string     `json:"name"`
	Kind      string     `json:"kind"` // "relay" or "invite"
	Link      string     `json:"link"`
	Key       string     `json:"key"`
	Endpoints []Endpoint `json:"endpoints"`
	Identity  string     `json:"identity,omitempty"`
	Mailbox   string     `json:"mailbox,omitempty"`
	Token     string     `json:"token,omitempty"`
	Secret    string     `json:"secret,omitempty"`
	InvName   string     `json:"invite_name,omitempty"`
}

type badVector struct {
	Name  string `json:"name"`
	Kind  string `json:"kind"`
	Link  string `json:"link"`
	Error string `json:"error"`
}

func seq(n int, start byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = start + byte(i)
	}
	return b
}

func testRelay() Relay {
	var r Relay
	copy(r.Key[:], seq(32, 1))
	r.Endpoints = []Endpoint{{Transport: "tcp", Addr: "127.0.0.1:7443"}}
	return r
}

func testInvite() Invite {
	inv := Invite{Relay: testRelay(), Name: "Ana"}
	copy(inv.Identity[:], seq(32, 0x40))
	copy(inv.Mailbox[:], seq(16, 0x80))
	copy(inv.Token[:], seq(32, 0xa0))
	copy(inv.Secret[:], seq(16, 0xe0))
	return inv
}

// cases builds the vectors: values to format, and bad links with the error
// each must produce.
func cases() vectorFile {
	r1 := testRelay()
	r2 := testRelay()
	r2.Endpoints = []Endpoint{{Transport: "tcp", Addr: "relay.example.org:443"}, {Transport: "tcp", Addr: "[2001:db8::1]:7443"}, {Transport: "tcp", Addr: "10.0.0.1:65535"}}
	r3 := testRelay()
	r3.Endpoints = []Endpoint{
		{Transport: "https", Addr: "relay.example.org:443", Params: []Param{{"sni", "www.example.org"}, {"s", "AQIDBAUGBwgJCgsMDQ4PEA"}}},
		{Transport: "obfs", Addr: "[2001:db8::1]:8443", Params: []Param{{"k", "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA"}, {"x", "p~1"}}},
		{Transport: "tcp", Addr: "10.0.0.1:7443"},
		{Transport: "future9", Addr: "10.0.0.2:1", Params: []Param{{"a", "b"}}},
	}
	inv3 := testInvite()
	inv3.Relay = r3
	inv := testInvite()
	inv2 := testInvite()
	inv2.Relay = r2
	inv2.Name = "Мария ☕ 李"
	good := r1.String()
	ginv := inv.String()
	bad := []badVector{
		{"empty", "relay", "", `relay link: does not start with "ferry://relay?"`},
		{"spaces", "relay", " " + good + "\n", "relay link: surrounding spaces or line breaks"},
		{"https", "relay", "https://example.org/", `relay link: does not start with "ferry://relay?"`},
		{"invite as relay", "relay", ginv, "relay link: this is an invite link, not a relay link"},
		{"relay as invite", "invite", good, "invite link: this is a relay link, not an invite"},
		{"other kind", "relay", "ferry://group?v=1", "relay link: unknown kind of ferry link"},
		{"no version", "relay", strings.Replace(good, "v=1&", "", 1), "relay link: missing version"},
		{"future version", "relay", strings.Replace(good, "v=1", "v=2", 1), "relay link: version 2 needs a newer Ferry"},
		{"version zero padded", "relay", strings.Replace(good, "v=1", "v=01", 1), `relay link: unsupported version "01"`},
		{"no key", "relay", "ferry://relay?v=1&tcp=127.0.0.1:7443", "relay link: missing relay key"},
		{"empty key", "relay", "ferry://relay?v=1&k=&tcp=127.0.0.1:7443", "relay link: missing relay key"},
		{"short key", "relay", "ferry://relay?v=1&k=AQID&tcp=127.0.0.1:7443", "relay link: relay key is not 32 bytes of base64url"},
		{"padded key", "relay", strings.Replace(good, "&tcp", "=&tcp", 1), "relay link: relay key is not 32 bytes of base64url"},
		{"non-canonical key", "relay", strings.Replace(good, "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA", "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyB", 1), "relay link: relay key is not 32 bytes of base64url"},
		{"std base64 key", "relay", "ferry://relay?v=1&k=+QIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA&tcp=127.0.0.1:7443", `relay link: character '+' not allowed`},
		{"zero key", "relay", "ferry://relay?v=1&k=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA&tcp=127.0.0.1:7443", "relay link: relay key is all zeros"},
		{"no endpoint", "relay", strings.TrimSuffix(good, "&tcp=127.0.0.1:7443"), "relay link: missing relay endpoint"},
		{"param without value", "relay", good + ",sni", `relay link: tcp endpoint 127.0.0.1:7443: parameter "sni": empty value`},
		{"param empty value", "relay", good + ",sni=", `relay link: tcp endpoint 127.0.0.1:7443: parameter "sni": empty value`},
		{"param upper key", "relay", good + ",SNI=a", `relay link: tcp endpoint 127.0.0.1:7443: parameter "SNI": key is not 1-16 of a-z and 0-9`},
		{"param empty key", "relay", good + ",=a", `relay link: tcp endpoint 127.0.0.1:7443: parameter "": key is not 1-16 of a-z and 0-9`},
		{"param bad char", "relay", good + ",a=b[", `relay link: tcp endpoint 127.0.0.1:7443: parameter "a": character '[' not allowed in a value`},
		{"param twice", "relay", good + ",a=1,a=2", `relay link: tcp endpoint 127.0.0.1:7443: parameter "a" given twice`},
		{"param too long", "relay", good + ",a=" + strings.Repeat("x", MaxParamLen+1), `relay link: tcp endpoint 127.0.0.1:7443: parameter "a": value longer than 255 bytes`},
		{"too many params", "relay", good + ",a=1,b=1,c=1,d=1,e=1,f=1,g=1,h=1,i=1", "relay link: tcp endpoint 127.0.0.1:7443: more than 8 parameters"},
		{"trailing comma", "relay", good + ",", `relay link: tcp endpoint 127.0.0.1:7443: parameter "": key is not 1-16 of a-z and 0-9`},
		{"no port", "relay", strings.Replace(good, "127.0.0.1:7443", "127.0.0.1", 1), `relay link: tcp endpoint "127.0.0.1": not host:port`},
		{"port zero", "relay", strings.Replace(good, ":7443", ":0", 1), `relay link: tcp endpoint "127.0.0.1:0": port is not a number from 1 to 65535`},
		{"port too big", "relay", strings.Replace(good, ":7443", ":65536", 1), `relay link: tcp endpoint "127.0.0.1:65536": port is not a number from 1 to 65535`},
		{"port leading zero", "relay", strings.Replace(good, ":7443", ":07443", 1), `relay link: tcp endpoint "127.0.0.1:07443": port is not a number from 1 to 65535`},
		{"ipv6 unbracketed", "relay", strings.Replace(good, "127.0.0.1:7443", "::1:7443", 1), `relay link: tcp endpoint "::1:7443": not host:port`},
		{"ipv6 zone", "relay", strings.Replace(good, "127.0.0.1:7443", "[fe80::1%25eth0]:7443", 1), `relay link: tcp endpoint "[fe80::1%25eth0]:7443": zone or escape in address`},
		{"empty host", "relay", strings.Replace(good, "127.0.0.1:7443", ":7443", 1), `relay link: tcp endpoint ":7443": missing host`},
		{"empty label", "relay", strings.Replace(good, "127.0.0.1:7443", "a..b:7443", 1), `relay link: tcp endpoint "a..b:7443": bad host name`},
		{"too many endpoints", "relay", good + strings.Repeat("&tcp=127.0.0.1:7443", MaxEndpoints), "relay link: more than 8 endpoints"},
		{"fragment", "relay", good + "#x", `relay link: character '#' not allowed`},
		{"trailing param", "relay", good + "&x", `relay link: x endpoint "": empty address`},
		{"trailing ampersand", "relay", good + "&", `relay link: unexpected parameter ""`},
		{"key out of order", "relay", "ferry://relay?k=AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA&v=1&tcp=127.0.0.1:7443", "relay link: version (v=) out of order"},
		{"missing identity", "invite", strings.Replace(ginv, "&id=QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8", "", 1), "invite link: missing identity key"},
		{"missing mailbox", "invite", strings.Replace(ginv, "&mb=gIGCg4SFhoeIiYqLjI2Ojw", "", 1), "invite link: missing mailbox"},
		{"missing token", "invite", strings.Replace(ginv, "&tok=oKGio6SlpqeoqaqrrK2ur7CxsrO0tba3uLm6u7y9vr8", "", 1), "invite link: missing delivery token"},
		{"missing secret", "invite", strings.Replace(ginv, "&s=4OHi4-Tl5ufo6err7O3u7w", "", 1), "invite link: missing secret"},
		{"short secret", "invite", strings.Replace(ginv, "&s=4OHi4-Tl5ufo6err7O3u7w", "&s=4OHi4-Tl5ufo6err7O3u", 1), "invite link: secret is not 16 bytes of base64url"},
		{"missing name", "invite", strings.TrimSuffix(ginv, "&n=QW5h"), "invite link: missing name"},
		{"empty name", "invite", strings.Replace(ginv, "&n=QW5h", "&n=", 1), "invite link: name is empty"},
		{"control in name", "invite", strings.Replace(ginv, "&n=QW5h", "&n=QQpi", 1), "invite link: name contains a control character"},
		{"name with space edge", "invite", strings.Replace(ginv, "&n=QW5h", "&n=IEFuYQ", 1), "invite link: name starts or ends with space"},
		{"name not utf8", "invite", strings.Replace(ginv, "&n=QW5h", "&n=_w", 1), "invite link: name is not valid UTF-8"},
		{"name too long", "invite", strings.Replace(ginv, "&n=QW5h", "&n="+strings.Repeat("QUFB", 22), 1), "invite link: name is longer than 64 bytes"},
		{"extra after name", "invite", ginv + "&x=1", `invite link: unexpected parameter "x"`},
		{"too long", "invite", ginv + strings.Repeat("A", MaxLen), "invite link: longer than 4096 bytes"},
	}
	return vectorFile{
		Comment: "Ferry link vectors (docs/protocol.md section 4). Keys are hex. Regenerate with: go test ./link -run TestVectors -update",
		Valid: []validVector{
			relayVector("one endpoint", r1), relayVector("three endpoints", r2),
			relayVector("endpoints with parameters and an unknown transport", r3),
			inviteVector("ascii name", inv), inviteVector("unicode name, three endpoints", inv2),
			inviteVector("endpoints with parameters", inv3),
		},
		Invalid: bad,
	}
}

func relayVector(name string, r Relay) validVector {
	return validVector{Name: name, Kind: "relay", Link: r.String(), Key: hex.EncodeToString(r.Key[:]), Endpoints: r.Endpoints}
}

func inviteVector(name string, i Invite) validVector {
	v := relayVector(name, i.Relay)
	v.Kind, v.Link = "invite", i.String()
	v.Identity, v.Mailbox = hex.EncodeToString(i.Identity[:]), hex.EncodeToString(i.Mailbox[:])
	v.Token, v.Secret = hex.EncodeToString(i.Token[:]), hex.EncodeToString(i.Secret[:])
	v.InvName = i.Name
	return v
}

func unhex(t *testing.T, dst []byte, s string) {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(dst) {
		t.Fatalf("bad hex %q in vector", s)
	}
	copy(dst, b)
}

func TestVectors(t *testing.T) {
	if *update {
		b, err := json.MarshalIndent(cases(), "", " ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile("testdata/links.json", append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Parallel()
	b, err := os.ReadFile("testdata/links.json")
	if err != nil {
		t.Fatal(err)
	}
	var vf vectorFile
	if err := json.Unmarshal(b, &vf); err != nil {
		t.Fatal(err)
	}
	for _, v := range vf.Valid {
		t.Run("valid/"+v.Name, func(t *testing.T) {
			t.Parallel()
			var want Relay
			unhex(t, want.Key[:], v.Key)
			want.Endpoints = v.Endpoints
			switch v.Kind {
			case "relay":
				got, err := ParseRelay(v.Link)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("ParseRelay = %+v, want %+v", got, want)
				}
				if s := got.String(); s != v.Link {
					t.Fatalf("String = %q, want %q", s, v.Link)
				}
			case "invite":
				wantInv := Invite{Relay: want, Name: v.InvName}
				unhex(t, wantInv.Identity[:], v.Identity)
				unhex(t, wantInv.Mailbox[:], v.Mailbox)
				unhex(t, wantInv.Token[:], v.Token)
				unhex(t, wantInv.Secret[:], v.Secret)
				got, err := ParseInvite(v.Link)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, wantInv) {
					t.Fatalf("ParseInvite = %+v, want %+v", got, wantInv)
				}
				if s := got.String(); s != v.Link {
					t.Fatalf("String = %q, want %q", s, v.Link)
				}
			default:
				t.Fatalf("unknown kind %q", v.Kind)
			}
		})
	}
	for _, v := range vf.Invalid {
		t.Run("invalid/"+v.Name, func(t *testing.T) {
			t.Parallel()
			var err error
			if v.Kind == "relay" {
				_, err = ParseRelay(v.Link)
			} else {
				_, err = ParseInvite(v.Link)
			}
			if err == nil {
				t.Fatalf("parse %q: got no error, want %q", v.Link, v.Error)
			}
			if err.Error() != v.Error {
				t.Fatalf("parse %q: got error %q, want %q", v.Link, err, v.Error)
			}
		})
	}
}

// TestLinkIsURLSafe checks that formatted links need no escaping anywhere a
// URL may appear and stay on one line.
func TestLinkIsURLSafe(t *testing.T) {
	t.Parallel()
	for _, s := range []string{testRelay().String(), testInvite().String()} {
		for i := 0; i < len(s); i++ {
			c := s[i]
			if c <= ' ' || c >= 0x7f || bytes.IndexByte([]byte(`"<>\^{|}`+"`"), c) >= 0 {
				t.Fatalf("link %q has character %q that needs escaping", s, c)
			}
		}
	}
}

func FuzzParseRelay(f *testing.F) {
	seedFuzz(f)
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRelay(s)
		if err != nil {
			if r.Endpoints != nil || r.Key != [32]byte{} {
				t.Fatalf("error %v with a non-zero Relay", err)
			}
			return
		}
		out := r.String()
		if out != s {
			t.Fatalf("String(ParseRelay(%q)) = %q", s, out)
		}
		r2, err := ParseRelay(out)
		if err != nil || !reflect.DeepEqual(r, r2) {
			t.Fatalf("reparse: %+v, %v; want %+v", r2, err, r)
		}
	})
}

func FuzzParseInvite(f *testing.F) {
	seedFuzz(f)
	f.Fuzz(func(t *testing.T, s string) {
		inv, err := ParseInvite(s)
		if err != nil {
			if !reflect.DeepEqual(inv, Invite{}) {
				t.Fatalf("error %v with a non-zero Invite", err)
			}
			return
		}
		out := inv.String()
		if out != s {
			t.Fatalf("String(ParseInvite(%q)) = %q", s, out)
		}
		inv2, err := ParseInvite(out)
		if err != nil || !reflect.DeepEqual(inv, inv2) {
			t.Fatalf("reparse: %+v, %v; want %+v", inv2, err, inv)
		}
	})
}

// FuzzFormat builds values from fuzz input and checks parse(format(x)) == x
// whenever x is valid.
func FuzzFormat(f *testing.F) {
	f.Add(seq(32, 1), seq(112, 0), "127.0.0.1:7443", "Ana")
	f.Add(seq(32, 9), seq(112, 3), "[::1]:1", "李")
	f.Fuzz(func(t *testing.T, key, rest []byte, addr, name string) {
		if len(key) < 32 || len(rest) < 96 {
			return
		}
		inv := Invite{Name: name}
		copy(inv.Relay.Key[:], key)
		inv.Relay.Endpoints = []Endpoint{{Transport: "tcp", Addr: addr}}
		copy(inv.Identity[:], rest[0:32])
		copy(inv.Mailbox[:], rest[32:48])
		copy(inv.Token[:], rest[48:80])
		copy(inv.Secret[:], rest[80:96])
		if err := inv.Check(); err != nil {
			if inv.Relay.Key != [32]byte{} && checkAddr(addr) == nil && CheckName(name) == nil && isLinkAddr(addr) {
				t.Fatalf("Check(%+v): %v", inv, err)
			}
			return
		}
		got, err := ParseInvite(inv.String())
		if err != nil {
			t.Fatalf("ParseInvite(String(x)) after Check passed: %v", err)
		}
		if !reflect.DeepEqual(got, inv) {
			t.Fatalf("ParseInvite(String(x)) = %+v, want %+v", got, inv)
		}
		r, err := ParseRelay(inv.Relay.String())
		if err != nil || !reflect.DeepEqual(r, inv.Relay) {
			t.Fatalf("ParseRelay(String(x)) = %+v, %v; want %+v", r, err, inv.Relay)
		}
	})
}

func isLinkAddr(a string) bool {
	for i := 0; i < len(a); i++ {
		if !isLinkChar(a[i]) || a[i] == '&' || a[i] == '=' {
			return false
		}
	}
	return true
}

// seedFuzz seeds a fuzzer with every link in testdata/links.json.
func seedFuzz(f *testing.F) {
	b, err := os.ReadFile("testdata/links.json")
	if err != nil {
		f.Fatal(err)
	}
	var vf vectorFile
	if err := json.Unmarshal(b, &vf); err != nil {
		f.Fatal(err)
	}
	for _, v := range vf.Valid {
		f.Add(v.Link)
	}
	for _, v := range vf.Invalid {
		f.Add(v.Link)
	}
}

// FuzzParseEndpoint checks that an endpoint parses to a value that formats
// back to the same text, or fails with an error and a zero Endpoint.
func FuzzParseEndpoint(f *testing.F) {
	f.Add("tcp=127.0.0.1:7443")
	f.Add("https=relay.example.org:443,sni=www.example.org,s=AQIDBAUGBwgJCgsMDQ4PEA")
	f.Add("obfs=[::1]:1,k=a~b,x=1")
	f.Add("tcp=127.0.0.1:7443,a=1,a=2")
	f.Fuzz(func(t *testing.T, s string) {
		e, err := ParseEndpoint(s)
		if err != nil {
			if !reflect.DeepEqual(e, Endpoint{}) {
				t.Fatalf("ParseEndpoint(%q) = %+v with error %v", s, e, err)
			}
			return
		}
		if got := e.String(); got != s {
			t.Fatalf("String(ParseEndpoint(%q)) = %q", s, got)
		}
		if err := e.Check(); err != nil {
			t.Fatalf("Check(ParseEndpoint(%q)): %v", s, err)
		}
	})
}

func TestEndpointParam(t *testing.T) {
	e, err := ParseEndpoint("https=relay.example.org:443,sni=www.example.org,s=c2VjcmV0")
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := e.Param("sni"); !ok || v != "www.example.org" {
		t.Fatalf(`Param("sni") = %q, %v; want "www.example.org", true`, v, ok)
	}
	if v, ok := e.Param("pin"); ok || v != "" {
		t.Fatalf(`Param("pin") = %q, %v; want "", false`, v, ok)
	}
	o := e
	o.Params = append([]Param(nil), e.Params...)
	o.Params[1].Value = "other"
	if e.Equal(o) || !e.Equal(e) {
		t.Fatal("Equal does not compare parameters")
	}
	if err := (Endpoint{Transport: "tcp", Addr: "a:1", Params: []Param{{"k", "a,b=c"}}}).Check(); err == nil {
		t.Fatal("Check accepted a parameter value holding link syntax")
	}
}
