package obfs_test

import (
	"context"
	"io"
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

// TestMaxPendingClosesOldest: past MaxPending held connections, the oldest
// is closed early and an honest client still gets through.
func TestMaxPendingClosesOldest(t *testing.T) {
	key, err := obfs.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := obfs.NewServer(obfs.ServerConfig{Key: key, Hold: time.Minute, MaxPending: 4})
	if err != nil {
		t.Fatal(err)
	}
	l, ep := transporttest.Serve(t, srv)
	var raws []net.Conn
	for range 6 {
		c, err := net.Dial("tcp", ep.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("garbage"))
		raws = append(raws, c)
		time.Sleep(20 * time.Millisecond) // accept order = dial order
	}
	for i, c := range raws {
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		_, err := c.Read(make([]byte, 1))
		closed := err == io.EOF
		if want := i < 2; closed != want {
			t.Errorf("raw conn %d: closed %v (%v), want %v", i, closed, err, want)
		}
	}
	go func() {
		if s, err := l.Accept(); err == nil {
			s.Write([]byte("ok"))
		}
	}()
	c, err := obfs.New(obfs.Config{}).DialContext(context.Background(), ep)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.ReadFull(c, make([]byte, 2)); err != nil {
		t.Fatal(err)
	}
}
