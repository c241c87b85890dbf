package main

import (
	"flag"
	"fmt"
	"log/slog"
	"net"
	"strings"

	"github.com/ferry-im/ferry/transport"
	"github.com/ferry-im/ferry/transport/tcp"
)

// serverTransport is one transport the relay can listen on: its name in
// --listen and in links, the flags of its own (if any), and how to build its
// relay half once the flags are parsed.
type serverTransport struct {
	name  string
	flags func(fl *flag.FlagSet) // registers the transport's flags; may be nil
	new   func(env serverEnv) (transport.Server, error)
}

// serverEnv is what a transport's relay half may draw on when it is built.
type serverEnv struct {
	dataDir string // the relay's data directory, which exists
	log     *slog.Logger
}

// serverTransports returns the relay's transports: the only list of them on
// the relay side. Each call returns fresh entries, so the flag values of one
// run are not shared with another.
func serverTransports() []serverTransport {
	return []serverTransport{
		tcpTransport(),
		obfsTransport(),
		httpsTransport(),
	}
}

func tcpTransport() serverTransport {
	return serverTransport{
		name: tcp.Name,
		new:  func(serverEnv) (transport.Server, error) { return tcp.Server{}, nil },
	}
}

// listenSpec is one --listen or --public value: a transport and an address.
type listenSpec struct {
	transport string
	addr      string // host:port
}

// listenList is a repeatable TRANSPORT=HOST:PORT flag over the known
// transports, at most once per transport.
type listenList struct {
	known []serverTransport
	specs []listenSpec
}

func (l *listenList) String() string {
	if l == nil {
		return ""
	}
	var parts []string
	for _, s := range l.specs {
		parts = append(parts, s.transport+"="+s.addr)
	}
	return strings.Join(parts, ",")
}

func (l *listenList) Set(v string) error {
	s, err := parseListen(v, l.known)
	if err != nil {
		return err
	}
	for _, old := range l.specs {
		if old.transport == s.transport {
			return fmt.Errorf("transport %s given twice (one --listen per transport)", s.transport)
		}
	}
	l.specs = append(l.specs, s)
	return nil
}

func parseListen(v string, known []serverTransport) (listenSpec, error) {
	name, addr, ok := strings.Cut(v, "=")
	if !ok || name == "" || addr == "" {
		return listenSpec{}, fmt.Errorf("endpoint %q: want TRANSPORT=HOST:PORT, e.g. tcp=127.0.0.1:7443", v)
	}
	if findTransport(known, name) == nil {
		var names []string
		for _, t := range known {
			names = append(names, t.name)
		}
		return listenSpec{}, fmt.Errorf("endpoint %q: unknown transport %q (this relay has: %s)", v, name, strings.Join(names, ", "))
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return listenSpec{}, fmt.Errorf("endpoint %q: %v", v, err)
	}
	return listenSpec{transport: name, addr: addr}, nil
}

func findTransport(ts []serverTransport, name string) *serverTransport {
	for i := range ts {
		if ts[i].name == name {
			return &ts[i]
		}
	}
	return nil
}
