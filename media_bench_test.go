package ferry

import (
	"bufio"
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/internal/localstore"
	"github.com/ferry-im/ferry/internal/relayclient"
	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/relay/blobfs"
	"github.com/ferry-im/ferry/relay/memstore"
	"github.com/ferry-im/ferry/session"
	"github.com/ferry-im/ferry/transport/fallback/fallbacktest"
)

// benchUploadSize is the upload of the media benchmarks: 1 GiB, or
// FERRY_BENCH_UPLOAD_MB.
func benchUploadSize() int64 {
	if mb, err := strconv.Atoi(os.Getenv("FERRY_BENCH_UPLOAD_MB")); err == nil && mb > 0 {
		return int64(mb) << 20
	}
	return 1 << 30
}

// BenchmarkTextDuringUpload measures text delivery latency (bob's Send
// call to alice's client having stored the text) through a relay on
// loopback with its SQLite store and blob store on disk, first alone
// (baseline), then while bob uploads a large attachment to alice
// (benchUploadSize) from the same client: the texts go on the same
// anonymous connection as the upload's pieces. It reports p50 and p99 of
// both and the differences; the target is a p99 within 100 ms of
// the baseline's. One iteration is one text of each phase.
func BenchmarkTextDuringUpload(b *testing.B) {
	ctx := context.Background()
	alice, bob := benchPairBlobs(b)
	to := conversationOf(b, bob, "alice")
	arrived := make(chan time.Time, 16)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go alice.Sync(sctx, SyncOptions{Wait: time.Hour, OnMessages: func(ms []*Message) {
		for _, m := range ms {
			if m.Kind == KindText {
				arrived <- time.Now()
			}
		}
	}})
	ping := func(i int) time.Duration {
		start := time.Now()
		if _, err := bob.Send(ctx, to, fmt.Sprint("ping ", i)); err != nil {
			b.Fatal(err)
		}
		select {
		case at := <-arrived:
			return at.Sub(start)
		case <-time.After(time.Minute):
			b.Fatal("text did not arrive")
		}
		return 0
	}
	ping(-1) // warm up the connections
	big := bigFile(b, benchUploadSize())
	b.ResetTimer()
	var base, during []time.Duration
	for i := range b.N {
		base = append(base, ping(i))
		time.Sleep(20 * time.Millisecond)
	}
	b.StopTimer()
	up := make(chan error, 1)
	upStart := time.Now()
	var progress atomic.Int64
	go func() {
		_, err := bob.SendFile(ctx, to, big, SendFileOptions{Progress: func(p Progress) { progress.Store(p.Done) }})
		up <- err
	}()
	for progress.Load() == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	b.StartTimer()
	for i := range b.N {
		during = append(during, ping(i))
		time.Sleep(20 * time.Millisecond)
	}
	b.StopTimer()
	if err := <-up; err != nil {
		b.Fatal(err)
	}
	secs := time.Since(upStart).Seconds()
	p := func(d []time.Duration, q int) float64 {
		s := slices.Clone(d)
		slices.Sort(s)
		return float64(s[min(len(s)-1, len(s)*q/100)].Microseconds()) / 1000
	}
	b.ReportMetric(p(base, 50), "base-p50-ms")
	b.ReportMetric(p(base, 99), "base-p99-ms")
	b.ReportMetric(p(during, 50), "upload-p50-ms")
	b.ReportMetric(p(during, 99), "upload-p99-ms")
	b.ReportMetric(p(during, 99)-p(base, 99), "p99-added-ms")
	b.ReportMetric(float64(benchUploadSize())/secs/1e6, "sendfile-MB/s") // encryption into the profile, then the upload
}

// benchPairBlobs is benchPair with a blob store on disk.
func benchPairBlobs(b *testing.B) (alice, bob *Client) {
	blobs, err := blobfs.Open(filepath.Join(b.TempDir(), "blobs"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { blobs.Close() })
	return benchPairWith(b, func(c *relay.Config) { c.Blobs = blobs })
}

// bigFile writes a random file of n bytes.
func bigFile(b *testing.B, n int64) string {
	p := filepath.Join(b.TempDir(), "big.bin")
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4<<20)
	rand.Read(buf)
	for left := n; left > 0; left -= int64(len(buf)) {
		buf[0]++ // not the same 4 MiB over and over
		if _, err := f.Write(buf[:min(left, int64(len(buf)))]); err != nil {
			b.Fatal(err)
		}
	}
	return p
}

// BenchmarkUploadTransports uploads a blob (benchUploadSize; one
// iteration is one upload) to a relay with its blob store on disk, over
// tcp and over obfs, in one run, and reports MB/s of each.
func BenchmarkUploadTransports(b *testing.B) {
	size := benchUploadSize()
	blobs, err := blobfs.Open(filepath.Join(b.TempDir(), "blobs"))
	if err != nil {
		b.Fatal(err)
	}
	defer blobs.Close()
	key, _ := channel.GenerateKeyPair(nil)
	srv, err := relay.NewServer(relay.Config{Key: key, Store: memstore.New(), Blobs: blobs,
		Limits: relay.Limits{BlobMaxSize: -1, BlobQuotaBytes: -1, BlobQuotaCount: -1}})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	obfsSrv := fallbacktest.ObfsServer(b, 0)
	serve := func(l net.Listener) {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go srv.ServeConn(context.Background(), c)
		}
	}
	tcpL, _ := net.Listen("tcp", "127.0.0.1:0")
	rawObfs, _ := net.Listen("tcp", "127.0.0.1:0")
	obfsL := obfsSrv.Listener(rawObfs)
	defer tcpL.Close()
	defer obfsL.Close()
	go serve(tcpL)
	go serve(obfsL)
	r := link.Relay{Key: key.Public, Endpoints: []link.Endpoint{
		{Transport: "tcp", Addr: tcpL.Addr().String()}, obfsSrv.Endpoint(rawObfs.Addr().String())}}
	src := bigFile(b, size)
	f, _ := os.Open(src)
	defer f.Close()
	for _, name := range []string{"tcp", "obfs"} {
		b.Run(name, func(b *testing.B) {
			d := &relayclient.Dialer{Transports: DefaultTransports(nil), Order: []string{name}}
			owner, _ := channel.GenerateKeyPair(nil)
			cn, err := d.Dial(context.Background(), r, owner)
			if err != nil {
				b.Fatal(err)
			}
			defer cn.Close()
			var tok [32]byte
			rand.Read(tok[:])
			if err := cn.SetToken(context.Background(), tok); err != nil {
				b.Fatal(err)
			}
			mb := channel.MailboxID(owner.Public)
			b.SetBytes(size)
			b.ResetTimer()
			for range b.N {
				var k [32]byte
				rand.Read(k[:])
				st, err := cn.BlobCreate(context.Background(), k, mb, tok, size, false)
				if err == nil {
					_, err = cn.Upload(context.Background(), k, f, size, st, nil)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkGroup1000 sends b.N texts to a group of 1,000 (the user and 999
// members, every member's mailbox on one ferry-relay process with its
// SQLite store, on loopback): each is one envelope fanned out by the
// relay. It reports the time per message (Send returns once the relay
// has stored all 999 copies durably), the bytes of the Fanout frame per
// message, and the relay process's CPU seconds per message (from its
// process_cpu_seconds_total).
func BenchmarkGroup1000(b *testing.B) {
	ctx := context.Background()
	relayLink, metrics := startRelayProcess(b)
	r, err := link.ParseRelay(relayLink)
	if err != nil {
		b.Fatal(err)
	}
	alice, err := Init(ctx, Config{Home: filepath.Join(b.TempDir(), "alice")}, relayLink, "alice")
	if err != nil {
		b.Fatal(err)
	}
	defer alice.Close()
	members := registerMembers(b, r, 999)
	conv := injectGroup(b, alice, "big", members)
	time.Sleep(5 * time.Second) // the relay's handshake bucket refills after 999 registrations
	if _, err := alice.Send(ctx, conv, "warm up"); err != nil {
		b.Fatal(err)
	}
	cpu0 := scrapeMetric(b, metrics, "process_cpu_seconds_total")
	var envBytes int
	b.ResetTimer()
	for i := range b.N {
		ms, err := alice.SendMany(ctx, conv, []string{fmt.Sprintf("message %d to a thousand people", i)})
		if err != nil {
			b.Fatal(err)
		}
		_ = ms
	}
	b.StopTimer()
	cpu := scrapeMetric(b, metrics, "process_cpu_seconds_total") - cpu0
	// The envelope of such a text: inner = sender, distribution and its
	// signature, then the sender-key message (header, content, tag,
	// signature), padded and sealed (docs/protocol.md 3.5, 3.8).
	text := fmt.Sprintf("message %d to a thousand people", b.N-1)
	inner := 32 + 93 + 64 + 29 + (26 + 8 + len(text)) + 16 + 64
	env, _ := session.NewGroupKeys([32]byte{}).SealGroup(rand.Reader, make([]byte, inner))
	envBytes = len(env)
	b.ReportMetric(float64(18+48*len(members)+envBytes+5), "fanout-bytes/msg")
	b.ReportMetric(cpu/float64(b.N)*1000, "relay-cpu-ms/msg")
}

// startRelayProcess builds and runs ferry-relay on loopback with
// Prometheus metrics, until the benchmark ends, and returns its link and
// metrics address.
func startRelayProcess(b *testing.B) (relayLink, metrics string) {
	dir := b.TempDir()
	bin := filepath.Join(dir, "ferry-relay")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/ferry-im/ferry/cmd/ferry-relay").CombinedOutput(); err != nil {
		b.Fatalf("go build ferry-relay: %v\n%s", err, out)
	}
	addr, metrics := freePort(b), freePort(b)
	cmd := exec.Command(bin, "--data", filepath.Join(dir, "relay"), "--listen", "tcp="+addr, "--metrics", metrics, "--log-level", "error")
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		out, err := exec.Command(bin, "link", "--data", filepath.Join(dir, "relay"), "--wait", "1s").Output()
		if err == nil {
			return strings.TrimSpace(string(out)), metrics
		}
		if time.Now().After(deadline) {
			b.Fatalf("ferry-relay did not start: %v", err)
		}
	}
}

func freePort(b *testing.B) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// scrapeMetric reads one unlabelled metric from a Prometheus endpoint.
func scrapeMetric(b *testing.B, addr, name string) float64 {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	b.Fatalf("no %s in the relay's metrics", name)
	return 0
}

// registerMembers makes n mailboxes on r, each with a delivery token,
// and returns them as group members with fresh identities.
func registerMembers(b *testing.B, r link.Relay, n int) []localstore.GroupMember {
	d := &relayclient.Dialer{Transports: DefaultTransports(nil)}
	var out []localstore.GroupMember
	for i := range n {
		dev, _ := channel.GenerateKeyPair(nil)
		id, err := session.NewIdentity(rand.Reader)
		if err != nil {
			b.Fatal(err)
		}
		var tok [32]byte
		rand.Read(tok[:])
		cn, err := d.Dial(context.Background(), r, dev)
		if err == nil {
			err = cn.SetToken(context.Background(), tok)
			cn.Close()
		}
		if err != nil {
			b.Fatalf("register member %d: %v", i, err)
		}
		out = append(out, localstore.GroupMember{Identity: [32]byte(id.Public()), Mailbox: channel.MailboxID(dev.Public),
			Token: tok, Relay: r.String(), Name: fmt.Sprintf("member-%03d", i)})
	}
	return out
}

// injectGroup makes a group of c with the given members (none of them a
// contact) straight in c's store, as a welcome from an admin would.
func injectGroup(b *testing.B, c *Client, name string, members []localstore.GroupMember) ConversationID {
	ctx := context.Background()
	var conv ConversationID
	err := c.a.Store.Update(ctx, func(tx *localstore.Tx) error {
		g, sg, err := c.newGroup(tx, name, nil)
		if err != nil {
			return err
		}
		for _, m := range members {
			if m.Contact, err = c.a.MemberRow(tx, m.Identity, m.Name, m.Relay, m.Mailbox, m.Token); err != nil {
				return err
			}
			if _, err := sg.AddMember(session.PublicIdentity(m.Identity)); err != nil {
				return err
			}
			g.Members = append(g.Members, m)
		}
		conv = ConversationID(g.Conversation)
		return c.saveGroup(tx, g, sg)
	})
	if err != nil {
		b.Fatal(err)
	}
	return conv
}
