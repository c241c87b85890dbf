package natsbus_test

import (
	"testing"

	"github.com/ferry-im/ferry/internal/servicetest"
	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/relay/bustest"
	"github.com/ferry-im/ferry/relay/natsbus"
)

func TestConformance(t *testing.T) {
	bustest.Run(t, bustest.Config{
		Pair: func(t *testing.T) (relay.Bus, relay.Bus) {
			url := servicetest.NATSURL(t)
			opts := &natsbus.Options{Prefix: servicetest.Name("ferry-test-")}
			a, err := natsbus.Dial(url, opts)
			if err != nil {
				t.Fatal(err)
			}
			b, err := natsbus.Dial(url, opts)
			if err != nil {
				t.Fatal(err)
			}
			return a, b
		},
	})
}
