package channel

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/ferry-im/ferry/wire"
)

func mustKey(t testing.TB) KeyPair {
	t.Helper()
	k, err := GenerateKeyPair(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// pair returns an established client and server over a, b.
func pairOver(t testing.TB, a, b net.Conn) (cli, srv *Conn, cliKey, srvKey KeyPair) {
	t.Helper()
	cliKey, srvKey = mustKey(t), mustKey(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var serr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		srv, serr = Server(ctx, b, srvKey)
	}()
	cli, err := Client(ctx, a, cliKey, srvKey.Public)
	wg.Wait()
	if err != nil || serr != nil {
		t.Fatalf("handshake: client %v, server %v", err, serr)
	}
	t.Cleanup(func() { cli.Close(); srv.Close() })
	return cli, srv, cliKey, srvKey
}

func pipePair(t testing.TB) (cli, srv *Conn, cliKey, srvKey KeyPair) {
	a, b := net.Pipe()
	return pairOver(t, a, b)
}

func TestHandshakeKeys(t *testing.T) {
	t.Parallel()
	cli, srv, ck, sk := pipePair(t)
	if got := srv.PeerKey(); got != ck.Public {
		t.Errorf("server PeerKey = %x, want client key %x", got, ck.Public)
	}
	if got := cli.PeerKey(); got != sk.Public {
		t.Errorf("client PeerKey = %x, want relay key %x", got, sk.Public)
	}
}

func TestSendRecv(t *testing.T) {
	t.Parallel()
	cli, srv, _, _ := pipePair(t)
	ctx := context.Background()
	sizes := []int{0, 1, 100, MaxRecordData - wire.HeaderLen, MaxRecordData - wire.HeaderLen + 1, 3*MaxRecordData + 7, wire.MaxPayload}
	errc := make(chan error, 1)
	var frames []wire.Frame
	for i, n := range sizes {
		p := make([]byte, n)
		rand.Read(p)
		frames = append(frames, wire.Frame{Type: wire.Type(i + 1), Payload: p})
	}
	go func() {
		for _, f := range frames {
			if err := cli.Send(ctx, f); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	for _, want := range frames {
		got, err := srv.Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got.Type != want.Type || !bytes.Equal(got.Payload, want.Payload) {
			t.Fatalf("got frame type %v len %d, want type %v len %d", got.Type, len(got.Payload), want.Type, len(want.Payload))
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	cli.Close()
	if _, err := srv.Recv(ctx); !errors.Is(err, io.EOF) {
		t.Errorf("Recv after peer Close: got %v, want io.EOF", err)
	}
}
