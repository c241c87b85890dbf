package probe

import (
	"github.com/ferry-im/ferry/monitor"
	"github.com/ferry-im/ferry/transport"
	"github.com/ferry-im/ferry/transport/tcp"
)

// Transport is a client transport the monitor can probe: how to make its
// dialer over a given raw dialer (the path: direct, a proxy, the censor
// testbed), and which stage a failure between the raw connection and the
// channel belongs to.
type Transport struct {
	Name string
	// New returns the transport's dialer, making its raw connections with
	// nd.
	New func(nd transport.NetDialer) transport.Dialer
	// SetupStage names the stage of a failure of the transport's own dial
	// after the raw connection opened: tls or http for a TLS transport
	// (serverBytes says whether the server sent anything), handshake for
	// the others. If nil, handshake.
	SetupStage func(err error, serverBytes bool) monitor.Stage
}

// Transports returns the transports this monitor knows, in the order of
// the client library's default registry.
func Transports() []Transport {
	return []Transport{
		{Name: tcp.Name, New: func(nd transport.NetDialer) transport.Dialer {
			return tcp.New(tcp.Config{NetDialer: nd})
		}},
	}
}
