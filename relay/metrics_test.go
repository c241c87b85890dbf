package relay_test

import (
	"testing"

	"github.com/ferry-im/ferry/wire"
)

// metric returns the value of the counter or gauge name with the given
// label value (or no labels), from the server's registry.
func (e *env) metric(name, label string) float64 {
	e.t.Helper()
	families, err := e.srv.Registry().Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			match := label == ""
			for _, l := range m.GetLabel() {
				if l.GetValue() == label {
					match = true
				}
			}
			if !match {
				continue
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return 0
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	bob := e.dial(mustKey(t), nil)
	bob.register(token(30))
	bob.subscribe()
	anon := e.dial(mustKey(t), nil)
	mustSendOK(t, anon.sendTo(bob.mailbox, token(30), id(1), []byte("x")))
	mustSendOK(t, anon.sendTo(bob.mailbox, token(30), id(1), []byte("x")))
	wantSendErr(t, anon.sendTo(bob.mailbox, token(31), id(2), []byte("x")), wire.CodeDenied)
	expect[wire.Deliver](bob)
	anon.sendFrame(wire.Frame{Type: 0xee})
	anon.quiet()

	tests := []struct {
		name, label string
		want        float64
	}{
		{"ferry_relay_connections", "", 2},
		{"ferry_relay_connections_total", "", 2},
		{"ferry_relay_handshakes_total", "ok", 2},
		{"ferry_relay_subscribers", "", 1},
		{"ferry_relay_sends_total", "stored", 1},
		{"ferry_relay_sends_total", "duplicate", 1},
		{"ferry_relay_sends_total", "denied", 1},
		{"ferry_relay_deliveries_total", "", 1},
		{"ferry_relay_frames_total", "Send", 3},
		{"ferry_relay_frames_total", "unknown", 1},
		{"ferry_relay_frames_total", "Ping", 1},
		{"ferry_relay_store_seconds", "put", 2},
	}
	for _, tt := range tests {
		if got := e.metric(tt.name, tt.label); got != tt.want {
			t.Errorf("%s{%s} = %v, want %v", tt.name, tt.label, got, tt.want)
		}
	}
}
