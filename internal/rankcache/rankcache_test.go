package rankcache_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-im/ferry"
	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/internal/rankcache"
	"github.com/ferry-im/ferry/internal/relayclient"
	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/monitor/ranking"
	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/relay/relaytest"
	"github.com/ferry-im/ferry/transport"
	"github.com/ferry-im/ferry/transport/tcp"
	"github.com/ferry-im/ferry/wire"
)

// signed returns a ranking of the default network (alt first, tcp
// blocked) certified by relayPriv and signed, valid from now.
func signed(t *testing.T, relayPriv [32]byte, now time.Time) []byte {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	cert, err := ranking.NewCert(relayPriv, key.Public().(ed25519.PublicKey), now.Add(24*time.Hour), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	r := &ranking.Ranking{Cert: cert, Networks: []ranking.Network{{Name: "everyone", Entries: []ranking.Entry{
		{Transport: "tcp", State: ranking.Blocked, Score: 0}, {Transport: "alt", State: ranking.OK, Score: 100},
	}}}}
	b, err := ranking.Sign(r, key, now)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type fetcher struct{ r wire.Rankings }

func (f fetcher) GetRanking(context.Context) (wire.Rankings, error) { return f.r, nil }

func TestCacheKeepsOnlyVerified(t *testing.T) {
	relayKey, _ := channel.GenerateKeyPair(rand.Reader)
	other, _ := channel.GenerateKeyPair(rand.Reader)
	now := time.Now()
	clock := now
	c := &rankcache.Cache{RelayKey: relayKey.Public, Path: filepath.Join(t.TempDir(), rankcache.FileName), Now: func() time.Time { return clock }}
	eps := []link.Endpoint{{Transport: "tcp", Addr: "r:1"}, {Transport: "alt", Addr: "r:2"}}
	r := link.Relay{Key: relayKey.Public, Endpoints: eps}
	if !c.Due() {
		t.Fatal("a new cache is not due")
	}
	forged := signed(t, other.Private, now)
	if err := c.Fetch(context.Background(), fetcher{wire.Rankings{Blobs: [][]byte{forged}}}); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.Order(r, eps); got[0].Transport != "tcp" {
		t.Fatalf("a forged ranking was used: %v", got)
	}
	good := signed(t, relayKey.Private, now)
	if err := c.Fetch(context.Background(), fetcher{wire.Rankings{Observed: netip.MustParseAddr("203.0.113.9"), Blobs: [][]byte{forged, good}}}); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.Order(r, eps); got[0].Transport != "alt" {
		t.Fatalf("the ranking was not used: %v", got)
	}
	if c.Due() {
		t.Error("due right after a fetch")
	}
	// A new cache reads the file; a stale ranking is not used.
	c2 := &rankcache.Cache{RelayKey: relayKey.Public, Path: c.Path, Now: func() time.Time { return clock }}
	if got, _ := c2.Order(r, eps); got[0].Transport != "alt" {
		t.Fatalf("the saved ranking was not used: %v", got)
	}
	clock = now.Add(ranking.DefaultTTL)
	if got, _ := c2.Order(r, eps); got[0].Transport != "tcp" {
		t.Fatalf("a stale ranking was used: %v", got)
	}
	if got, _ := c2.Order(link.Relay{Key: other.Public, Endpoints: eps}, eps); got[0].Transport != "tcp" {
		t.Fatalf("another relay's link was reordered: %v", got)
	}
}

// dialFunc is a transport.Dialer made of a function.
type dialFunc func(ctx context.Context, ep link.Endpoint) (net.Conn, error)

func (f dialFunc) DialContext(ctx context.Context, ep link.Endpoint) (net.Conn, error) {
	return f(ctx, ep)
}

// counted returns a tcp dialer that adds one to n per dial.
func counted(n *atomic.Int32) transport.Dialer {
	d := tcp.New(tcp.Config{})
	return dialFunc(func(ctx context.Context, ep link.Endpoint) (net.Conn, error) {
		n.Add(1)
		return d.DialContext(ctx, ep)
	})
}

// TestClientFollowsRanking: a ranking published through a real relay
// reaches the client with its Sync, and the client then dials the
// transport ranked best first; a forged one changes nothing.
func TestClientFollowsRanking(t *testing.T) {
	publisher, _ := channel.GenerateKeyPair(rand.Reader)
	rl := relaytest.Start(t, &relay.Config{RankingPublishers: [][32]byte{publisher.Public}})
	addr := rl.Link.Endpoints[0].Addr
	lnk := link.Relay{Key: rl.Key.Public, Endpoints: []link.Endpoint{{Transport: "tcp", Addr: addr}, {Transport: "alt", Addr: addr}}}
	var tcpN, altN atomic.Int32
	reg, err := transport.NewRegistry(transport.Entry{Name: "tcp", Dialer: counted(&tcpN)}, transport.Entry{Name: "alt", Dialer: counted(&altN)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	home := t.TempDir()
	c, err := ferry.Init(ctx, ferry.Config{Home: home, Transports: reg}, lnk.String(), "user")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { c.Close() }()
	publish := func(blob []byte) {
		d := &relayclient.Dialer{Transports: reg}
		cn, err := d.Dial(ctx, lnk, publisher)
		if err != nil {
			t.Fatal(err)
		}
		defer cn.Close()
		if err := cn.PutRanking(ctx, blob); err != nil {
			t.Fatal(err)
		}
	}
	other, _ := channel.GenerateKeyPair(rand.Reader)
	publish(signed(t, other.Private, time.Now()))
	if err := c.Sync(ctx, ferry.SyncOptions{}); err != nil {
		t.Fatal(err)
	}
	altBefore := altN.Load()
	if _, err := c.Invite(ctx); err != nil { // a command that connects
		t.Fatal(err)
	}
	if err := c.Sync(ctx, ferry.SyncOptions{}); err != nil {
		t.Fatal(err)
	}
	if altN.Load() != altBefore {
		t.Fatalf("alt dialed %d times after a forged ranking, want tcp first", altN.Load()-altBefore)
	}
	publish(signed(t, rl.Key.Private, time.Now()))
	// The cache fetches again after its refresh period (10 min): start
	// afresh instead, as a client would after that long.
	c.Close()
	if err := os.Remove(rankcache.InProfile(home)); err != nil {
		t.Fatal(err)
	}
	if c, err = ferry.Open(ctx, ferry.Config{Home: home, Transports: reg}); err != nil {
		t.Fatal(err)
	}
	if err := c.Sync(ctx, ferry.SyncOptions{}); err != nil { // fetches the ranking
		t.Fatal(err)
	}
	tcpBefore, altBefore := tcpN.Load(), altN.Load()
	if err := c.Sync(ctx, ferry.SyncOptions{}); err != nil {
		t.Fatal(err)
	}
	if tcpN.Load() != tcpBefore || altN.Load() != altBefore+1 {
		t.Fatalf("after the ranking: tcp dialed %d, alt %d times; want alt once, tcp never", tcpN.Load()-tcpBefore, altN.Load()-altBefore)
	}
}
