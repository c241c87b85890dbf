package probe

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-im/ferry/censor"
	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/relay/memstore"
	"github.com/ferry-im/ferry/transport"
	"github.com/ferry-im/ferry/transport/https"
	"github.com/ferry-im/ferry/transport/obfs"
	"github.com/ferry-im/ferry/transport/tcp"
	"github.com/ferry-im/ferry/transport/transporttest"
)

// testbed is a relay, a reference web site and a censor between them and
// the monitor, all in memory (transporttest.Network), so that it runs
// inside a synctest bubble where the censor's minutes pass at once.
type testbed struct {
	t       *testing.T
	net     transporttest.Network
	key     channel.KeyPair
	link    link.Relay
	roots   *x509.CertPool
	wg      sync.WaitGroup
	closers []func()

	servers   []transportServer
	noBlobs   bool            // the relay started next has no blob store
	publisher channel.KeyPair // the key the relay takes transport rankings from

	mu       sync.Mutex // mu protects the fields below
	relay    *relay.Server
	relayLs  []net.Listener
	engine   *censor.Engine
	policy   string
	verdicts map[censor.Action]int // verdicts the censor gave, other than pass
	firstAct time.Time             // when the current policy first acted
}

const (
	relayAddr = "10.0.0.1:7443" // tcp
	httpsAddr = "10.0.0.1:443"
	obfsAddr  = "10.0.0.1:8443"
	refAddr   = "10.0.0.2:443"
	refURL    = "https://www.example.com/page"
	refHost   = "www.example.com"
	vantageIP = "10.9.0.1"
	pageSize  = 256 << 10
)

func newTestbed(t *testing.T) *testbed {
	tb := &testbed{t: t, verdicts: map[censor.Action]int{}}
	k, err := channel.GenerateKeyPair(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tb.key = k
	if tb.publisher, err = channel.GenerateKeyPair(rand.Reader); err != nil {
		t.Fatal(err)
	}
	tb.servers = tb.transportServers()
	tb.link = link.Relay{Key: k.Public}
	for _, ts := range tb.servers {
		tb.link.Endpoints = append(tb.link.Endpoints, ts.srv.Endpoint(ts.addr))
	}
	tb.startRelay()
	tb.startReference()
	tb.setPolicy("open", 1)
	return tb
}

// transportServer is the relay half of one transport at one address.
type transportServer struct {
	addr string
	srv  transport.Server
}

// transportServers makes the relay's tcp, https and obfs servers.
func (tb *testbed) transportServers() []transportServer {
	var secret https.Secret
	rand.Read(secret[:])
	cert, _ := selfSigned(tb.t, "relay.example")
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		tb.t.Fatal(err)
	}
	hs, err := https.NewServer(https.ServerConfig{Secret: secret, TLS: &tls.Config{Certificates: []tls.Certificate{cert}}, SNI: "relay.example", Pin: https.Pin(leaf)})
	if err != nil {
		tb.t.Fatal(err)
	}
	ok, err := obfs.GenerateKey(rand.Reader)
	if err != nil {
		tb.t.Fatal(err)
	}
	os, err := obfs.NewServer(obfs.ServerConfig{Key: ok, Hold: 20 * time.Second})
	if err != nil {
		tb.t.Fatal(err)
	}
	return []transportServer{{relayAddr, tcp.Server{}}, {httpsAddr, hs}, {obfsAddr, os}}
}

// link1 returns the relay's link cut to the endpoint of transport name.
func (tb *testbed) link1(name string) link.Relay {
	for _, ep := range tb.link.Endpoints {
		if ep.Transport == name {
			return link.Relay{Key: tb.link.Key, Endpoints: []link.Endpoint{ep}}
		}
	}
	tb.t.Fatalf("the testbed relay has no %s endpoint", name)
	return link.Relay{}
}

// startRelay starts (or restarts, with an empty store: a relay that lost
// its data) the relay, listening on every transport.
func (tb *testbed) startRelay() {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	tb.stopRelay()
	var blobs relay.BlobStore = memstore.NewBlobs()
	if tb.noBlobs {
		blobs = nil
	}
	srv, err := relay.NewServer(relay.Config{
		Key: tb.key, Store: memstore.New(), Blobs: blobs, Limits: relay.Limits{AddrRate: -1, HandshakeRate: -1, KeyRate: -1},
		RankingPublishers: [][32]byte{tb.publisher.Public},
	})
	if err != nil {
		tb.t.Fatal(err)
	}
	tb.relay, tb.relayLs = srv, nil
	for _, ts := range tb.servers {
		raw, err := tb.net.Listen(ts.addr)
		if err != nil {
			tb.t.Fatal(err)
		}
		l := ts.srv.Listener(vantageListener{raw})
		tb.relayLs = append(tb.relayLs, l)
		tb.wg.Go(func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				tb.wg.Go(func() { srv.ServeConn(context.Background(), c) })
			}
		})
	}
}

// stopRelay closes the relay's listeners and the relay. tb.mu must be
// held.
func (tb *testbed) stopRelay() {
	for _, l := range tb.relayLs {
		l.Close()
	}
	if tb.relay != nil {
		tb.relay.Close()
	}
}

// startReference serves a page of pageSize bytes over TLS at refAddr.
func (tb *testbed) startReference() {
	cert, roots := selfSigned(tb.t, refHost)
	tb.roots = roots
	l, err := tb.net.Listen(refAddr)
	if err != nil {
		tb.t.Fatal(err)
	}
	page := []byte(strings.Repeat("reference page ", pageSize/15+1))[:pageSize]
	srv := &http.Server{
		Handler:  http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(page) }),
		ErrorLog: log.New(io.Discard, "", 0), // the hello control never finishes its handshakes
	}
	tl := tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{cert}, CurvePreferences: []tls.CurveID{tls.X25519}})
	tb.wg.Go(func() { srv.Serve(tl) })
	tb.closers = append(tb.closers, func() { srv.Close() })
}

// setPolicy replaces the censor by a fresh engine playing the named
// policy, seeded.
func (tb *testbed) setPolicy(name string, seed uint64) {
	p, err := censor.LoadPolicy(name)
	if err != nil {
		tb.t.Fatal(err)
	}
	var cs [32]byte
	cs[0], cs[1] = byte(seed), byte(seed>>8)
	e := &censor.Engine{Policy: p, Rand: mrand.NewChaCha8(cs)}
	tb.mu.Lock()
	old := tb.engine
	tb.engine, tb.policy, tb.firstAct = e, name, time.Time{}
	tb.mu.Unlock()
	if old != nil {
		old.Close()
	}
}

// DialContext dials addr on the memory network through the censor, as the
// vantage point.
func (tb *testbed) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	pc, err := tb.net.DialContext(ctx, link.Endpoint{Transport: "tcp", Addr: addr})
	if err != nil {
		return nil, err
	}
	c := newBufferedConn(pc)
	tb.mu.Lock()
	e := tb.engine
	tb.mu.Unlock()
	server := netip.MustParseAddrPort(addr)
	w := e.Wrap(c, netip.AddrPortFrom(netip.MustParseAddr(vantageIP), 40000), server)
	return &verdictConn{Conn: w, tb: tb, e: e}, nil
}

// verdictConn notes the verdicts the censor gave a connection, to tell
// when a policy first acted.
type verdictConn struct {
	net.Conn
	tb   *testbed
	e    *censor.Engine
	once sync.Once
}

func (c *verdictConn) note() {
	v := c.Conn.(interface{ Verdict() censor.Verdict }).Verdict()
	if v.Action == censor.Pass {
		return
	}
	c.once.Do(func() {
		c.tb.mu.Lock()
		defer c.tb.mu.Unlock()
		c.tb.verdicts[v.Action]++
		if c.tb.engine == c.e && c.tb.firstAct.IsZero() {
			c.tb.firstAct = time.Now()
		}
	})
}

func (c *verdictConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.note()
	return n, err
}

func (c *verdictConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.note()
	return n, err
}

// firstAction returns when the current policy first dropped, reset or
// throttled a connection (zero if it has not yet).
func (tb *testbed) firstAction() time.Time {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return tb.firstAct
}

func (tb *testbed) close() {
	tb.mu.Lock()
	tb.stopRelay()
	e := tb.engine
	tb.mu.Unlock()
	for _, f := range tb.closers {
		f()
	}
	e.Close()
	tb.wg.Wait()
}

// textProbe returns a TextProbe of the testbed's relay over one transport
// (tcp unless named), through the censor, with its accounts in a
// temporary directory.
func (tb *testbed) textProbe(t *testing.T, transport ...string) *TextProbe {
	name := "tcp"
	if len(transport) > 0 {
		name = transport[0]
	}
	tr, _ := transportByName(name)
	p, err := NewTextProbe(TextConfig{Dir: t.TempDir(), Relay: tb.link1(name), Transport: tr, NetDialer: tb})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// clientProbe returns a ClientProbe of the relay over tcp.
func (tb *testbed) clientProbe(t *testing.T) *ClientProbe {
	p, err := NewClientProbe(ClientConfig{Dir: t.TempDir(), Relay: tb.link1("tcp"), Transport: Transports()[0], NetDialer: tb})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (tb *testbed) control(t *testing.T) *Control {
	c, err := NewControl(ControlConfig{URL: refURL, Addr: refAddr, NetDialer: tb, FetchBytes: 64 << 10,
		TLS: &tls.Config{RootCAs: tb.roots, ClientSessionCache: tls.NewLRUClientSessionCache(4)}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// selfSigned returns a certificate for host and a pool that trusts it.
func selfSigned(t *testing.T, host string) (tls.Certificate, *x509.CertPool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(10 * 365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(c)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

// vantageListener gives every accepted connection the vantage's address
// as its remote address, as a relay on the Internet would see it.
type vantageListener struct{ net.Listener }

func (l vantageListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return vantageConn{newBufferedConn(c)}, nil
}

type vantageConn struct{ net.Conn }

func (vantageConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.ParseIP(vantageIP), Port: 40000}
}

// bufferedConn gives a net.Pipe end the write buffer of a TCP socket: a
// Write returns once its bytes are queued, and a goroutine of its own
// writes them to the pipe. Without it, two ends that both write before
// they read (an HTTP/2 server's SETTINGS against the client's preface)
// block each other forever. Close sends what is queued (for a second at
// most), then closes the pipe, as a TCP close sends its buffer before FIN.
type bufferedConn struct {
	net.Conn
	queue chan []byte
	done  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
}

func newBufferedConn(c net.Conn) *bufferedConn {
	b := &bufferedConn{Conn: c, queue: make(chan []byte, 256), done: make(chan struct{})}
	b.wg.Go(b.pump)
	return b
}

func (b *bufferedConn) pump() {
	defer b.Conn.Close()
	for {
		select {
		case p := <-b.queue:
			if _, err := b.Conn.Write(p); err != nil {
				return
			}
		case <-b.done:
			b.Conn.SetWriteDeadline(time.Now().Add(time.Second))
			for {
				select {
				case p := <-b.queue:
					if _, err := b.Conn.Write(p); err != nil {
						return
					}
				default:
					return
				}
			}
		}
	}
}

func (b *bufferedConn) Write(p []byte) (int, error) {
	select {
	case <-b.done:
		return 0, net.ErrClosed
	case b.queue <- append([]byte(nil), p...):
		return len(p), nil
	}
}

// SetWriteDeadline does nothing: writes do not block.
func (b *bufferedConn) SetWriteDeadline(time.Time) error { return nil }

func (b *bufferedConn) SetDeadline(t time.Time) error { return b.Conn.SetReadDeadline(t) }

func (b *bufferedConn) Close() error {
	b.once.Do(func() { close(b.done) })
	b.wg.Wait()
	return nil
}
