package probe

import (
	"errors"
	"strings"

	"github.com/ferry-im/ferry/monitor"
	"github.com/ferry-im/ferry/transport"
	"github.com/ferry-im/ferry/transport/https"
	"github.com/ferry-im/ferry/transport/obfs"
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

// Transports returns the transports this monitor knows: those of the
// client library's default registry.
func Transports() []Transport {
	return []Transport{
		{Name: tcp.Name, New: func(nd transport.NetDialer) transport.Dialer {
			return tcp.New(tcp.Config{NetDialer: nd})
		}},
		{Name: https.Name, New: func(nd transport.NetDialer) transport.Dialer {
			return https.New(https.Config{NetDialer: nd})
		}, SetupStage: httpsStage},
		{Name: obfs.Name, New: func(nd transport.NetDialer) transport.Dialer {
			return obfs.New(obfs.Config{NetDialer: nd})
		}},
	}
}

// httpsStage: the https dialer's errors say "tls handshake" for the TLS
// part; after it comes the HTTP/2 upgrade (a server that answers as a
// website refuses it with https.ErrRefused).
func httpsStage(err error, _ bool) monitor.Stage {
	if !errors.Is(err, https.ErrRefused) && strings.Contains(err.Error(), "tls handshake") {
		return monitor.StageTLS
	}
	return monitor.StageHTTP
}

// transportByName returns the known transport called name.
func transportByName(name string) (Transport, bool) {
	for _, t := range Transports() {
		if t.Name == name {
			return t, true
		}
	}
	return Transport{}, false
}
