package membus_test

import (
	"testing"

	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/relay/bustest"
	"github.com/ferry-im/ferry/relay/membus"
)

func TestConformance(t *testing.T) {
	bustest.Run(t, bustest.Config{
		Pair: func(t *testing.T) (relay.Bus, relay.Bus) {
			var n membus.Network
			return n.Node(), n.Node()
		},
	})
}
