package relay_test

import (
	"bytes"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/relay/memstore"
	"github.com/ferry-im/ferry/wire"
)

func TestRankings(t *testing.T) {
	publisher, other := mustKey(t), mustKey(t)
	e := newEnv(t, func(c *relay.Config) { c.RankingPublishers = [][32]byte{other.Public, publisher.Public} })
	from := &net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 40000}

	stranger := e.dial(mustKey(t), from)
	stranger.send(wire.PutRanking{ReqID: 1, Blob: []byte("forged")})
	if m := expect[wire.Error](stranger); m.ReqID != 1 || m.Code != wire.CodeDenied {
		t.Fatalf("a stranger's PutRanking: %+v, want Denied", m)
	}
	stranger.send(wire.GetRanking{ReqID: 2})
	if m := expect[wire.Rankings](stranger); m.ReqID != 2 || len(m.Blobs) != 0 || m.Observed != netip.MustParseAddr("203.0.113.7") {
		t.Fatalf("rankings before any: %+v", m)
	}

	put := func(k channel.KeyPair, blob string) {
		c := e.dial(k, nil)
		c.send(wire.PutRanking{ReqID: 3, Blob: []byte(blob)})
		if m := expect[wire.OK](c); m.ReqID != 3 {
			t.Fatalf("PutRanking: %+v", m)
		}
	}
	put(publisher, "first")
	put(publisher, "second") // replaces the first
	put(other, "other")
	c := e.dial(mustKey(t), nil)
	c.send(wire.GetRanking{ReqID: 4})
	m := expect[wire.Rankings](c)
	if len(m.Blobs) != 2 || !bytes.Equal(m.Blobs[0], []byte("other")) || !bytes.Equal(m.Blobs[1], []byte("second")) {
		t.Fatalf("rankings %q, want other and second in the publishers' order", m.Blobs)
	}
	if m.Observed.IsValid() {
		t.Errorf("a pipe's observed address %v, want none", m.Observed)
	}
}

func TestRankingPublishersBounded(t *testing.T) {
	keys := make([][32]byte, wire.MaxRankings+1)
	for i := range keys {
		keys[i][0] = byte(i + 1)
	}
	_, err := relay.NewServer(relay.Config{Key: mustKey(t), Store: memstore.New(), RankingPublishers: keys})
	if err == nil || !strings.Contains(err.Error(), "ranking publishers") {
		t.Fatalf("17 ranking publishers: %v", err)
	}
}
