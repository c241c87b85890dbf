package censor

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// scenarios are the scenarios of the censor the project must beat
// (docs/gfw.md section 5), each a shipped policy.
var scenarios = []string{"open", "whatsapp-2017-07", "whatsapp-2017-09", "fet-2021", "probing", "tls-gate", "whitelist", "throttle", "intermittent", "ip-block", "tls-in-tls"}

// TestPoliciesCoverScenarios checks that every scenario ships as a policy
// that loads, and that docs/censor.md documents every policy.
func TestPoliciesCoverScenarios(t *testing.T) {
	doc, err := os.ReadFile("../docs/censor.md")
	if err != nil {
		t.Fatal(err)
	}
	names := PolicyNames()
	for _, s := range scenarios {
		if !slices.Contains(names, s) {
			t.Errorf("scenario %q has no policy (have %v)", s, names)
		}
	}
	for _, n := range names {
		p, err := LoadPolicy(n)
		if err != nil {
			t.Errorf("LoadPolicy(%q): %v", n, err)
			continue
		}
		if p.Name != n {
			t.Errorf("policy file %s.json is named %q", n, p.Name)
		}
		if !regexp.MustCompile("(?m)^\\| `" + regexp.QuoteMeta(n) + "` \\|").Match(doc) {
			t.Errorf("docs/censor.md has no row for policy %s", n)
		}
		if p.Description == "" || (n != "open" && len(p.Sources) == 0) {
			t.Errorf("policy %s lacks a description or sources", n)
		}
	}
}

func TestLoadPolicyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mine.json")
	js := `{"name":"mine","rules":[{"name":"sig","signature":{"patterns":["de ad ?? ef"]}}]}`
	if err := os.WriteFile(path, []byte(js), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := LoadPolicy(path)
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "mine" || p.Rules[0].Signature.Patterns[0] != "de ad ?? ef" {
		t.Errorf("loaded %+v", p)
	}
	if _, err := LoadPolicy("no-such-policy"); err == nil || !strings.Contains(err.Error(), "fet-2021") {
		t.Errorf("LoadPolicy(unknown name) = %v, want an error listing the names", err)
	}
}

func TestParsePolicyErrors(t *testing.T) {
	tests := []struct {
		name, js, want string
	}{
		{"unknown top field", `{"name":"x","rules":[],"extra":1}`, "unknown field"},
		{"unknown rule field", `{"name":"x","rules":[{"fet":{"probabilty":0.5}}]}`, "unknown field"},
		{"no rule key", `{"name":"x","rules":[{"name":"a"}]}`, "no rule key"},
		{"two rule keys", `{"name":"x","rules":[{"fet":{},"whitelist":{}}]}`, "several rule keys"},
		{"ech action", `{"name":"x","rules":[{"ech":{"action":"throttle"}}]}`, "action"},
		{"no name", `{"rules":[]}`, "no name"},
		{"trailing data", `{"name":"x","rules":[]} {}`, "after the policy"},
		{"bad duration", `{"name":"x","rules":[{"fet":{"residual":"3 minutes"}}]}`, "duration"},
		{"number duration", `{"name":"x","rules":[{"fet":{"residual":180}}]}`, "duration must be a string"},
		{"negative duration", `{"name":"x","rules":[{"fet":{"residual":"-1s"}}]}`, "negative"},
		{"probability", `{"name":"x","rules":[{"fet":{"probability":1.5}}]}`, "probability"},
		{"duplicate names", `{"name":"x","rules":[{"fet":{}},{"fet":{}}]}`, "used twice"},
		{"bad pattern", `{"name":"x","rules":[{"signature":{"patterns":["57 4"]}}]}`, "not a hex byte"},
		{"empty patterns", `{"name":"x","rules":[{"signature":{"patterns":[]}}]}`, "no patterns"},
		{"bad action", `{"name":"x","rules":[{"signature":{"patterns":["57"],"action":"throttle"}}]}`, "action"},
		{"host without hosts", `{"name":"x","rules":[{"host":{}}]}`, "no hosts"},
		{"bad host", `{"name":"x","rules":[{"host":{"hosts":["a b"]}}]}`, "not a host name"},
		{"bad kind", `{"name":"x","rules":[{"throttle":{"kinds":["quic"]}}]}`, "kind"},
		{"bad cidr", `{"name":"x","rules":[{"fet":{"servers":["10.0.0.0/33"]}}]}`, "prefix length"},
		{"gate without list", `{"name":"x","rules":[{"tls_gate":{}}]}`, "empty ja4"},
		{"outage bounds", `{"name":"x","rules":[{"outage":{"down_min":"2m","down_max":"1m"}}]}`, "exceeds"},
		{"probe reference", `{"name":"x","rules":[{"probe":{"reference":"nowhere"}}]}`, "reference"},
		{"penalty range", `{"name":"x","rules":[{"host":{"hosts":["a.b"],"penalty_fail_min":0.9,"penalty_fail_max":0.1}}]}`, "penalty fail"},
		{"not json", `name: x`, "invalid character"},
		{"field case", `{"Name":"x","rules":[]}`, "lower case"},
		{"nested field case", `{"name":"x","rules":[{"fet":{"Probability":0.5}}]}`, "lower case"},
		{"kelvin sign", "{\"name\":\"x\",\"rules\":[{\"\u212aind\":1}]}", "unknown field"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParsePolicy([]byte(tt.js))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParsePolicy = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// FuzzParsePolicy checks that the decoder never panics and that what it
// accepts survives a round trip through its own encoding.
func FuzzParsePolicy(f *testing.F) {
	for _, n := range PolicyNames() {
		b, err := policyFS.ReadFile("policies/" + n + ".json")
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"name":"x","rules":[{"signature":{"patterns":["57 41 ?? ??"],"servers":["10.0.0.0/8"],"ports":[443]}}]}`))
	f.Add([]byte(`{"name":"x","rules":[{"ip_block":{"addresses":["192.0.2.1:443","2001:db8::/32"]}},{"tls_in_tls":{"records":4,"gap":"1s"}}]}`))
	hello, err := os.ReadFile(chromiumHelloFile)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePolicy(b)
		if err != nil {
			if p != nil {
				t.Fatal("error with a policy")
			}
			return
		}
		out, err := json.Marshal(p)
		if err != nil {
			t.Fatalf("marshal accepted policy: %v", err)
		}
		p2, err := ParsePolicy(out)
		if err != nil {
			t.Fatalf("re-parse %s: %v", out, err)
		}
		out2, err := json.Marshal(p2)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, out2) {
			t.Fatalf("round trip changed the policy:\n%s\n%s", out, out2)
		}
		e := &Engine{Policy: p, Rand: seeded(1), Clock: &FakeClock{}}
		_ = e.Admit(clientN(1).Addr(), testServer)
		_ = inspect(e, clientN(1), testServer, []byte("GET / HTTP/1.1\r\nHost: a.example\r\n\r\n"))
		_, _ = e.NullRouted(testServer)
		fl := NewFlow(clientN(2), testServer, time.Time{}, hello)
		fl.TLS = flowRecords(t, handshake13, 17, "^98 v50 ^18")
		_, _ = e.Observe(e.Inspect(fl), fl)
		_ = e.Close()
	})
}
