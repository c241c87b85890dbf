package obfs_test

import (
	"net"
	"testing"
	"time"

	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/transport"
	"github.com/ferry-im/ferry/transport/obfs"
	"github.com/ferry-im/ferry/transport/transporttest"
)

func newServer(t testing.TB, hold time.Duration) *obfs.Server {
	t.Helper()
	key, err := obfs.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := obfs.NewServer(obfs.ServerConfig{Key: key, Hold: hold})
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

func TestConformance(t *testing.T) {
	transporttest.Run(t, transporttest.Harness{
		New: func(t *testing.T) (transport.Dialer, net.Listener, link.Endpoint) {
			l, ep := transporttest.Serve(t, newServer(t, time.Second))
			return obfs.New(obfs.Config{}), l, ep
		},
		Unreachable: func(t *testing.T) link.Endpoint {
			return transporttest.Unreachable(t, newServer(t, 0).Endpoint("127.0.0.1:1"))
		},
	})
}

func TestServerConformance(t *testing.T) {
	transporttest.RunServer(t, transporttest.ServerHarness{
		Name: obfs.Name,
		New: func(t *testing.T) (transport.Server, transport.Dialer) {
			return newServer(t, time.Second), obfs.New(obfs.Config{})
		},
	})
}
