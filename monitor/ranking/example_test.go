package ranking_test

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net/netip"
	"time"

	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/monitor/ranking"
)

// The relay's key certifies a ranking key once; the monitor signs its
// rankings with it; a client verifies them against the relay key of its
// link and orders the link's endpoints for its own address.
func Example() {
	relayKey, _ := ecdh.X25519().GenerateKey(rand.Reader)
	var relayPriv, relayPub [32]byte
	copy(relayPriv[:], relayKey.Bytes())
	copy(relayPub[:], relayKey.PublicKey().Bytes())
	now := time.Now()

	_, key, _ := ed25519.GenerateKey(rand.Reader)
	cert, _ := ranking.NewCert(relayPriv, key.Public().(ed25519.PublicKey), now.Add(365*24*time.Hour), rand.Reader)
	blob, _ := ranking.Sign(&ranking.Ranking{Cert: cert, Networks: []ranking.Network{{
		Name:     "home-isp",
		Prefixes: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")},
		Entries:  []ranking.Entry{{Transport: "tcp", State: ranking.Blocked, Score: 0}, {Transport: "https", State: ranking.OK, Score: 100}},
	}}}, key, now)

	r, err := ranking.Verify(blob, relayPub, now)
	if err != nil {
		fmt.Println(err)
		return
	}
	eps := []link.Endpoint{{Transport: "tcp", Addr: "relay.example:7443"}, {Transport: "https", Addr: "relay.example:443"}}
	for _, ep := range ranking.Order(eps, r.For(netip.MustParseAddr("203.0.113.9"))) {
		fmt.Println(ep.Transport)
	}
	// Output:
	// https
	// tcp
}
