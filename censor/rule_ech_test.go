package censor

import (
	"testing"
	"time"
)

// helloWith returns Go's ClientHello for sni with an extra extension.
func helloWith(t *testing.T, sni string, ext uint16) []byte {
	t.Helper()
	h, err := ParseClientHello(goClientHello(t, sni))
	if err != nil {
		t.Fatal(err)
	}
	h.Extensions = append(h.Extensions, ext)
	h.ExtensionData = append(h.ExtensionData, randomBytes(seeded(60), 40))
	b, err := h.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestECHRule(t *testing.T) {
	esni, ech, plain := helloWith(t, "a.example", extESNI), helloWith(t, "a.example", extECH), goClientHello(t, "a.example")
	for _, tt := range []struct {
		name   string
		policy string
		first  []byte
		want   Action
	}{
		{"esni", `{"name":"p","rules":[{"ech":{}}]}`, esni, Drop},
		{"ech not blocked in 2020", `{"name":"p","rules":[{"ech":{}}]}`, ech, Pass},
		{"ech assumed blocked", `{"name":"p","rules":[{"ech":{"ech":true}}]}`, ech, Drop},
		{"plain", `{"name":"p","rules":[{"ech":{"ech":true}}]}`, plain, Pass},
		{"esni reset", `{"name":"p","rules":[{"ech":{"action":"reset"}}]}`, esni, Reset},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clock := &FakeClock{}
			e := &Engine{Policy: mustPolicy(t, tt.policy), Rand: seeded(61), Clock: clock}
			if v := inspect(e, clientN(1), testServer, tt.first); v.Action != tt.want {
				t.Fatalf("verdict %+v, want %s", v, tt.want)
			}
			if tt.want == Pass {
				return
			}
			// The 3-tuple stays blocked for 180 s, other ports do not.
			clock.Advance(ECHResidual - time.Second)
			if v := e.Admit(clientN(1).Addr(), testServer); v.Action != tt.want {
				t.Errorf("after 179 s: %+v, want %s", v, tt.want)
			}
			if v := e.Admit(clientN(1).Addr(), testServer2); v.Action != Pass {
				t.Errorf("other port: %+v, want pass", v)
			}
			clock.Advance(time.Second)
			if v := e.Admit(clientN(1).Addr(), testServer); v.Action != Pass {
				t.Errorf("after 180 s: %+v, want pass", v)
			}
		})
	}
	// The shipped policy blocks ESNI only.
	e := &Engine{Policy: mustLoad(t, "esni-2020"), Rand: seeded(62), Clock: &FakeClock{}}
	if v := inspect(e, clientN(2), testServer, esni); v.Action != Drop || v.Rule != "esni" {
		t.Errorf("esni-2020 on ESNI: %+v, want drop by esni", v)
	}
	if v := inspect(e, clientN(3), testServer, capturedHello(t)); v.Action != Pass {
		t.Errorf("esni-2020 on Chromium: %+v, want pass", v)
	}
}
