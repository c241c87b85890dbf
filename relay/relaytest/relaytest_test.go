package relaytest_test

import (
	"context"
	"crypto/rand"
	"net"
	"testing"
	"time"

	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/relay/relaytest"
	"github.com/ferry-im/ferry/wire"
)

func TestStart(t *testing.T) {
	r := relaytest.Start(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	key, err := channel.GenerateKeyPair(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := net.Dial("tcp", r.Link.Endpoints[0].Addr)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := channel.Client(ctx, nc, key, r.Link.Key)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	f, _ := wire.NewFrame(wire.Ping{Nonce: 5})
	if err := ch.Send(ctx, f); err != nil {
		t.Fatal(err)
	}
	got, err := ch.Recv(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m, err := wire.Decode(got); err != nil || m != (wire.Pong{Nonce: 5}) {
		t.Fatalf("got %+v (%v), want Pong 5", m, err)
	}
	r.Close()
	r.Close()
	if _, err := net.DialTimeout("tcp", r.Link.Endpoints[0].Addr, time.Second); err == nil {
		t.Fatal("the relay still listens after Close")
	}
}
