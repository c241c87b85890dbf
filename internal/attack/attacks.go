package attack

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/wire"
)

// All is every attack, in the order of issue 13's findings.
func All() []Attack {
	return []Attack{
		{Name: "partial-frames", Run: partialFrames},
		{Name: "subscribe-flood", Run: subscribeFlood},
		{Name: "ack-flood", Run: ackFlood},
		{Name: "handshake-flood", Run: handshakeFlood, Relay: fewFiles},
		{Name: "disk-fill", Run: diskFill, Relay: diskBudget},
		{Name: "bundle-drain", Run: bundleDrain, Check: prekeysLeft},
		{Name: "old-invite", Run: oldInvite},
	}
}

// attackers runs n attacking goroutines, calls ready once each has set up
// (or given up), and waits for them to end after ctx does.
func attackers(ctx context.Context, n int, ready func(), one func(ctx context.Context, i int, up func())) {
	var set, done sync.WaitGroup
	set.Add(n)
	for i := range n {
		done.Go(func() {
			up := sync.OnceFunc(set.Done)
			defer up()
			one(ctx, i, up)
		})
	}
	set.Wait()
	ready()
	<-ctx.Done()
	done.Wait()
}

// newKey is a throwaway key.
func newKey() channel.KeyPair {
	k, err := channel.GenerateKeyPair(rand.Reader)
	if err != nil {
		panic(err) // crypto/rand does not fail
	}
	return k
}

// stallConn passes the first allow bytes written and then blocks every
// Write until the conn is closed: a peer that stops sending mid-stream.
type stallConn struct {
	net.Conn
	mu     sync.Mutex
	allow  int
	closed chan struct{}
	once   sync.Once
}

func (c *stallConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	n := min(len(p), c.allow)
	c.allow -= n
	c.mu.Unlock()
	if n > 0 {
		if m, err := c.Conn.Write(p[:n]); err != nil {
			return m, err
		}
	}
	if n == len(p) {
		return n, nil
	}
	<-c.closed
	return n, net.ErrClosed
}

func (c *stallConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// handshakeBytes is what the client writes during the handshake (message
// 1 and the confirmation, with their length prefixes).
const handshakeBytes = 2 + 96 + 2 + 16

// partialFrames: Conns connections each start four 1 MiB frames, send
// their first records and half of another, and stall (issue 13: 3,000
// such connections held 2.1 GB).
func partialFrames(ctx context.Context, e *Env, s Scale, ready func()) error {
	allow := handshakeBytes + 4*(channel.MaxRecordData+2+5+16+5) + channel.MaxRecordData/2
	attackers(ctx, s.Conns, ready, func(ctx context.Context, i int, up func()) {
		nc, err := dialFrom(ctx, e.Relay.Link, sourceIP(i, s.Addrs))
		if err != nil {
			return
		}
		sc := &stallConn{Conn: nc, allow: allow, closed: make(chan struct{})}
		defer sc.Close()
		hctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		ch, err := channel.Client(hctx, sc, newKey(), e.Relay.Link.Key)
		cancel()
		if err != nil {
			return
		}
		defer ch.Close()
		big := wire.Frame{Type: wire.TypeSend, Payload: make([]byte, wire.MaxPayload)}
		for range 5 {
			go ch.Send(ctx, big) // each blocks once the stall begins; Close ends them
		}
		time.Sleep(100 * time.Millisecond) // let the records out before counting this one set up
		up()
		<-ctx.Done()
	})
	return nil
}

// subscribeFlood: Conns/30 connections send Subscribes as fast as the
// relay reads them and never read the answers (issue 13: one connection
// took the relay from 0.37 to 1.31 GB in 60 s); a connection the relay
// closes is replaced by a new one with a new key.
func subscribeFlood(ctx context.Context, e *Env, s Scale, ready func()) error {
	frames := make([]wire.Frame, 64)
	for i := range frames {
		frames[i], _ = wire.NewFrame(wire.Subscribe{ReqID: uint32(i)})
	}
	attackers(ctx, max(s.Conns/30, 1), ready, func(ctx context.Context, i int, up func()) {
		flood(ctx, e, sourceIP(i, s.Addrs), up, false, func(ch *channel.Conn) error {
			return ch.SendBatch(ctx, frames)
		})
	})
	return nil
}

// ackFlood: 32 connections acknowledge 4,096 made-up seqs at a time as
// fast as they can (issue 13: honest round trips went from 53 to 300 ms);
// a connection the relay closes is replaced by a new one with a new key.
func ackFlood(ctx context.Context, e *Env, s Scale, ready func()) error {
	seqs := make([]uint64, wire.MaxAcks)
	for i := range seqs {
		seqs[i] = uint64(i + 1)
	}
	ack, _ := wire.NewFrame(wire.Ack{Seqs: seqs})
	attackers(ctx, 32, ready, func(ctx context.Context, i int, up func()) {
		flood(ctx, e, sourceIP(i, s.Addrs), up, true, func(ch *channel.Conn) error {
			return ch.Send(ctx, ack)
		})
	})
	return nil
}

// flood connects from ip with a new key (registering a mailbox if
// register), calls up, and sends with send until it fails; then it does
// it again, until ctx ends. It never reads what the relay answers.
func flood(ctx context.Context, e *Env, ip net.IP, up func(), register bool, send func(*channel.Conn) error) {
	for ctx.Err() == nil {
		ch, err := connect(ctx, e.Relay.Link, newKey(), ip)
		if err != nil {
			up()
			sleep(ctx, 100*time.Millisecond)
			continue
		}
		stop := context.AfterFunc(ctx, func() { ch.Close() })
		if !register {
			up()
		} else if _, err := request[wire.OK](ctx, ch, wire.SetToken{ReqID: 1, Token: [32]byte{1}}); err == nil {
			up()
		}
		for send(ch) == nil {
		}
		stop()
		ch.Close()
	}
}

// floodConns is how many stalled handshakes the flood keeps open.
func floodConns(s Scale) int { return 5 * s.Conns }

// fewFiles runs the relay with an open-file limit that the handshake
// flood exceeds by half.
func fewFiles(c RelayConfig, s Scale) RelayConfig {
	c.OpenFiles = floodConns(s) * 2 / 3
	return c
}

// handshakeFlood: 5 × Conns connections from Addrs addresses, half again
// the relay's open-file limit, each send one byte of a handshake and
// stall; those the relay closes dial again (issue 13: 21,000 stalled
// handshakes from 200 addresses hit the descriptor limit and honest round
// trips rose to 2-5 s).
func handshakeFlood(ctx context.Context, e *Env, s Scale, ready func()) error {
	n := floodConns(s)
	attackers(ctx, n, ready, func(ctx context.Context, i int, up func()) {
		for ctx.Err() == nil {
			nc, err := dialFrom(ctx, e.Relay.Link, sourceIP(i, s.Addrs))
			if err != nil {
				up()
				sleep(ctx, 100*time.Millisecond)
				continue
			}
			nc.Write([]byte{0})
			up()
			closed := make(chan struct{})
			go func() {
				nc.Read(make([]byte, 1)) // returns when the relay closes it
				close(closed)
			}()
			select {
			case <-ctx.Done():
			case <-closed:
			}
			nc.Close()
			sleep(ctx, 10*time.Millisecond)
		}
	})
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// diskBudget runs the relay with a disk budget Scale.Bytes below the file
// system's free space, so that the fill reaches it without filling the
// machine's disk; on PostgreSQL (--store), whose free space the relay does
// not know, with a budget of Scale.Bytes for the store's own schema.
func diskBudget(c RelayConfig, s Scale) RelayConfig {
	if slices.Contains(c.Args, "--store") {
		c.Args = append(c.Args, "--disk-mib", strconv.FormatInt(s.Bytes>>20, 10))
		return c
	}
	keep := max(freeSpace(filepath.Dir(c.Data))-s.Bytes, 0) >> 20
	c.Args = append(c.Args, "--disk-free-mib", strconv.FormatInt(keep, 10))
	return c
}

// diskFill: 8 connections with mailboxes of their own send 256 KiB
// envelopes to them as fast as the relay takes them (issue 13: 2.5 GB in
// 20 s, then 10,000 error lines in 15 s). The relay must stop near its
// budget, keep serving reads, and keep taking the honest client's text
// (its mailbox holds little) from the disk budget's reserve.
func diskFill(ctx context.Context, e *Env, s Scale, ready func()) error {
	db := filepath.Join(e.Relay.Data, "relay.db")
	dbSize := func() int64 { return fileSize(db) + fileSize(db+"-wal") }
	db0, free0 := dbSize(), freeSpace(e.Relay.Data)
	var stored sync.Map
	attackers(ctx, 8, ready, func(ctx context.Context, i int, up func()) {
		defer up()
		key := newKey()
		ch, err := connect(ctx, e.Relay.Link, key, sourceIP(i, s.Addrs))
		if err != nil {
			return
		}
		defer ch.Close()
		go func() { <-ctx.Done(); ch.Close() }()
		tok := [32]byte{'d', byte(i)}
		if _, err := request[wire.OK](ctx, ch, wire.SetToken{ReqID: 1, Token: tok}); err != nil {
			return
		}
		mb := channel.MailboxID(key.Public)
		env := make([]byte, wire.MaxEnvelope)
		for n := 0; ctx.Err() == nil; n++ {
			id := [16]byte{'f', byte(i), byte(n >> 16), byte(n >> 8), byte(n)}
			m, err := request[wire.Message](ctx, ch, wire.Send{ID: id, To: mb, Token: tok, Envelope: env})
			if err != nil {
				return
			}
			if _, ok := m.(wire.SendOK); ok {
				stored.Store(id, true)
			} else {
				up() // the relay refuses: the disk budget is reached
				sleep(ctx, 5*time.Millisecond)
			}
		}
	})
	// The budget is the file system's free space less s.Bytes when the
	// relay started: space other processes on the machine freed
	// meanwhile (a test's big files removed) is the relay's to use too.
	// (On PostgreSQL there is no relay.db: the relay's own budget of
	// s.Bytes is what holds, and the honest client's refusals show it.)
	grew := dbSize() - db0
	freedByOthers := max(freeSpace(e.Relay.Data)+grew-free0, 0)
	if grew > s.Bytes+freedByOthers+64<<20 {
		e.Problemf("the database grew by %d MiB with a disk budget of about %d MiB (others freed %d MiB meanwhile)", grew>>20, s.Bytes>>20, freedByOthers>>20)
	}
	for _, line := range []string{"relay storage is full", "store envelope"} {
		if n := strings.Count(e.Relay.Stderr(), line); n > 25 {
			e.Problemf("the relay logged %q %d times", line, n)
		}
	}
	return nil
}

// freeSpace is the space free for unprivileged use on dir's file system
// (0 if unknown).
func freeSpace(dir string) int64 {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0
	}
	return int64(st.Bavail) * int64(st.Bsize)
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// bundleDrain: a stranger holding the victim's old invite fetches bundles
// as fast as it may (issue 13: 31 fetches drained the one-time prekeys).
func bundleDrain(ctx context.Context, e *Env, s Scale, ready func()) error {
	attackers(ctx, 4, ready, func(ctx context.Context, i int, up func()) {
		defer up()
		ch, err := connect(ctx, e.Relay.Link, newKey(), sourceIP(i, s.Addrs))
		if err != nil {
			return
		}
		defer ch.Close()
		up()
		for ctx.Err() == nil {
			if _, err := request[wire.Message](ctx, ch, wire.GetBundle{ReqID: 1, Mailbox: e.VictimBox, Token: e.InviteToken}); err != nil {
				return
			}
		}
	})
	return nil
}

// prekeysLeft checks that the drain took no more one-time prekeys than
// the mailbox's burst (20) and an hour's rate allow.
func prekeysLeft(ctx context.Context, e *Env) error {
	c, err := connect(ctx, e.Relay.Link, e.Victim, net.IPv4(127, 0, 0, 1))
	if err != nil {
		return err
	}
	defer c.Close()
	n, err := request[wire.PrekeyCount](ctx, c, wire.GetPrekeyCount{ReqID: 9})
	if err != nil {
		return err
	}
	if int(n.OneTime) < e.Prekeys-21 || int(n.KEM) < e.Prekeys-21 {
		return fmt.Errorf("%d and %d of %d one-time prekeys left after the drain, want at least %d", n.OneTime, n.KEM, e.Prekeys, e.Prekeys-21)
	}
	return nil
}

// oldInvite: strangers holding the victim's old invite send to it as fast
// as they may (issue 13: an old invite filled a mailbox's quota in 22 s);
// after a second the victim revokes the invite's token, after which no
// stranger's envelope may be stored.
func oldInvite(ctx context.Context, e *Env, s Scale, ready func()) error {
	var revoked atomic.Bool // set once the revocation is answered
	var victim sync.WaitGroup
	defer victim.Wait()
	readyThenRevoke := func() {
		ready()
		victim.Go(func() {
			sleep(ctx, time.Second)
			if ctx.Err() != nil {
				return
			}
			if err := revoke(ctx, e); err != nil {
				e.Problemf("%v", err)
				return
			}
			revoked.Store(true)
		})
	}
	attackers(ctx, 8, readyThenRevoke, func(ctx context.Context, i int, up func()) {
		defer up()
		ch, err := connect(ctx, e.Relay.Link, newKey(), sourceIP(i, s.Addrs))
		if err != nil {
			return
		}
		defer ch.Close()
		up()
		for n := 0; ctx.Err() == nil; n++ {
			after := revoked.Load()
			id := [16]byte{'i', byte(i), byte(n >> 16), byte(n >> 8), byte(n)}
			m, err := request[wire.Message](ctx, ch, wire.Send{ID: id, To: e.VictimBox, Token: e.InviteToken, Envelope: make([]byte, 353)})
			if err != nil {
				return
			}
			if _, ok := m.(wire.SendOK); ok && after {
				e.Problemf("an envelope sent with a revoked token was stored")
				return
			}
		}
	})
	return nil
}

// revoke removes the invite's token from the victim's mailbox.
func revoke(ctx context.Context, e *Env) error {
	c, err := connect(ctx, e.Relay.Link, e.Victim, net.IPv4(127, 0, 0, 1))
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = request[wire.OK](ctx, c, wire.RemoveToken{ReqID: 5, Token: e.InviteToken})
	if err != nil {
		return errors.New("revoke the invite's token: " + err.Error())
	}
	return nil
}
