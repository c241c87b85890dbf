package relayclient_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/internal/clienttest"
	"github.com/ferry-im/ferry/internal/relayclient"
	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/wire"
)

func newKey(t *testing.T) channel.KeyPair {
	t.Helper()
	k, err := channel.GenerateKeyPair(nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// dial connects to r with a fresh key and returns the conn and its key.
func dial(t *testing.T, h *clienttest.Harness, r link.Relay) (*relayclient.Conn, channel.KeyPair) {
	t.Helper()
	k := newKey(t)
	c, err := (&relayclient.Dialer{Transports: h.Transports()}).Dial(context.Background(), r, k)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, k
}

// owner starts a relay and connects to it as a mailbox owner with a
// delivery token.
func owner(t *testing.T, token [32]byte) (*clienttest.Relay, *relayclient.Conn, [16]byte, *clienttest.Harness) {
	t.Helper()
	h := clienttest.New(t)
	r := h.StartRelay(clienttest.RelayConfig{})
	c, key := dial(t, h, r.Link)
	if err := c.SetToken(context.Background(), token); err != nil {
		t.Fatal(err)
	}
	return r, c, wire.MailboxID(key.Public), h
}

// refusalWait is a relay handshake timeout past the client's refusal
// window.
const refusalWait = 3500 * time.Millisecond

// TestDialCauses checks that each way of failing to reach a relay gives
// its own cause and a sentence that names it, all wrapping ErrUnreachable.
func TestDialCauses(t *testing.T) {
	tests := []struct {
		name   string
		setup  func(h *clienttest.Harness, r *clienttest.Relay) link.Relay
		order  []string
		cause  relayclient.Cause
		phrase string
	}{
		{"refused", func(h *clienttest.Harness, r *clienttest.Relay) link.Relay {
			r.Down()
			return r.Link
		}, nil, relayclient.CauseRefused, "nothing answers at tcp 127.0.0."},
		{"every endpoint refused", func(h *clienttest.Harness, r *clienttest.Relay) link.Relay {
			other := h.StartRelay(clienttest.RelayConfig{})
			r.Down()
			other.Down()
			l := r.Link
			l.Endpoints = append(l.Endpoints, link.Endpoint{Transport: "tcp", Addr: other.Addr})
			return l
		}, nil, relayclient.CauseRefused, " or tcp 127.0.0."},
		{"wrong key", func(h *clienttest.Harness, r *clienttest.Relay) link.Relay {
			l := r.Link
			l.Key[0] ^= 1
			return l
		}, nil, relayclient.CauseHandshake, "relay key in the link is wrong, or the relay runs another version"},
		{"reset on the path", func(h *clienttest.Harness, r *clienttest.Relay) link.Relay {
			h.Censor("tls-gate")
			return r.Link
		}, nil, relayclient.CauseReset, "was reset on the way"},
		{"dropped on the path", func(h *clienttest.Harness, r *clienttest.Relay) link.Relay {
			h.Censor("whitelist")
			return r.Link
		}, nil, relayclient.CauseSilent, "never answered"},
		{"dropped on the path, then closed by the relay", func(h *clienttest.Harness, r *clienttest.Relay) link.Relay {
			// The relay's handshake timeout ends the connection the censor
			// keeps silent: the late close is no refusal.
			r2 := h.StartRelay(clienttest.RelayConfig{Limits: relay.Limits{HandshakeTimeout: refusalWait}})
			h.Censor("whitelist")
			return r2.Link
		}, nil, relayclient.CauseSilent, "never answered"},
		{"no usable transport", func(h *clienttest.Harness, r *clienttest.Relay) link.Relay {
			return r.Link
		}, []string{"https"}, relayclient.CauseOther, "offers tcp, and this Ferry may use only https"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := clienttest.New(t)
			r := h.StartRelay(clienttest.RelayConfig{})
			l := tt.setup(h, r)
			d := &relayclient.Dialer{Transports: h.Transports(), Order: tt.order, DialTimeout: refusalWait + 2*time.Second}
			c, err := d.Dial(context.Background(), l, newKey(t))
			if err == nil {
				c.Close()
				t.Fatal("Dial succeeded")
			}
			var de *relayclient.DialError
			if !errors.As(err, &de) || !errors.Is(err, relayclient.ErrUnreachable) {
				t.Fatalf("got %T %v, want a *DialError wrapping ErrUnreachable", err, err)
			}
			if got := de.Cause(); got != tt.cause {
				t.Errorf("cause: got %v, want %v", got, tt.cause)
			}
			if msg := err.Error(); !strings.Contains(msg, tt.phrase) || strings.Contains(msg, "\n") {
				t.Errorf("got %q, want one sentence containing %q", msg, tt.phrase)
			}
		})
	}
}

// TestDialOrder checks that Order picks the transports to try, in its
// order, and that the link's order is used without it.
func TestDialOrder(t *testing.T) {
	h := clienttest.New(t)
	r := h.StartRelay(clienttest.RelayConfig{})
	down := h.StartRelay(clienttest.RelayConfig{})
	down.Down()
	l := r.Link
	// A first endpoint that refuses: the dial goes on to the working one.
	l.Endpoints = append([]link.Endpoint{{Transport: "tcp", Addr: down.Addr}}, l.Endpoints...)
	c, err := (&relayclient.Dialer{Transports: h.Transports(), Order: []string{"tcp"}}).Dial(context.Background(), l, newKey(t))
	if err != nil {
		t.Fatalf("dial with a dead first endpoint: %v", err)
	}
	c.Close()
}

// TestRequests runs the request-answer frames against a real relay:
// a bundle of an unknown mailbox is refused, and after the owner
// registered a token and prekeys it is handed out.
func TestRequests(t *testing.T) {
	ctx := context.Background()
	h := clienttest.New(t)
	r := h.StartRelay(clienttest.RelayConfig{})
	owner, key := dial(t, h, r.Link)
	mb := wire.MailboxID(key.Public)
	token := [32]byte{7}
	stranger, _ := dial(t, h, r.Link)
	_, err := stranger.GetBundle(ctx, mb, token)
	var re *relayclient.RefusedError
	if !errors.As(err, &re) || (re.Code != wire.CodeDenied && re.Code != wire.CodeNotFound) {
		t.Fatalf("GetBundle of an unknown mailbox: got %v, want a refusal", err)
	}
	if err := owner.SetToken(ctx, token); err != nil {
		t.Fatal(err)
	}
	put := wire.PutPrekeys{Signed: []byte("signed record"), OneTime: []wire.Prekey{{ID: 1, Data: []byte("one-time")}}, LastResort: []byte("last resort")}
	if err := owner.PutPrekeys(ctx, put); err != nil {
		t.Fatal(err)
	}
	b, err := stranger.GetBundle(ctx, mb, token)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b.Signed, put.Signed) || !bytes.Equal(b.OneTime, []byte("one-time")) || !b.KEMLastResort {
		t.Fatalf("bundle: got %+v", b)
	}
}

// TestSubscribeDrain stores a backlog of more than one store page, then
// subscribes: Drained turns true exactly when every envelope before the
// relay's answer has been taken, and acked envelopes leave the relay.
func TestSubscribeDrain(t *testing.T) {
	ctx := context.Background()
	r, owner, mb, _ := owner(t, [32]byte{1})
	const n = 150
	for i := range n {
		r.Put(mb, relay.Envelope{ID: [16]byte{byte(i), byte(i >> 8), 1}, Data: []byte{byte(i)}})
	}
	if err := owner.Subscribe(ctx); err != nil {
		t.Fatal(err)
	}
	var got []wire.Deliver
	deadline := time.After(10 * time.Second)
	for {
		if done, err := owner.Drained(); err != nil {
			t.Fatal(err)
		} else if done {
			break
		}
		select {
		case <-owner.Ready():
		case <-deadline:
			t.Fatalf("not drained after taking %d", len(got))
		}
		batch := owner.Take(64)
		if done, _ := owner.Drained(); done && len(got)+len(batch) < n {
			t.Fatalf("drained after %d of %d", len(got)+len(batch), n)
		}
		got = append(got, batch...)
	}
	if len(got) != n {
		t.Fatalf("took %d, want %d", len(got), n)
	}
	seqs := make([]uint64, len(got))
	for i, d := range got {
		if d.Envelope[0] != byte(i) {
			t.Fatalf("deliver %d carries envelope %d: out of order", i, d.Envelope[0])
		}
		seqs[i] = d.Seq
	}
	if err := owner.Ack(ctx, seqs); err != nil {
		t.Fatal(err)
	}
	if left := r.PendingSoon(mb); left != 0 {
		t.Fatalf("%d envelopes left after the ack", left)
	}
}

// TestSendBatch pipelines Sends: all are answered; a wrong token is a
// permanent refusal reported per envelope; a busy relay stops the batch
// with ErrBusy.
func TestSendBatch(t *testing.T) {
	ctx := context.Background()
	token := [32]byte{3}
	r, _, mb, h := owner(t, token)
	sender, _ := dial(t, h, r.Link)
	var batch []wire.Send
	for i := range 20 {
		tok := token
		if i == 5 {
			tok[0] ^= 1
		}
		batch = append(batch, wire.Send{ID: [16]byte{byte(i), 2}, To: mb, Token: tok, Envelope: []byte("sealed")})
	}
	res, err := sender.SendBatch(ctx, batch)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != len(batch) {
		t.Fatalf("%d answers, want %d", len(res), len(batch))
	}
	for _, a := range res {
		if wantErr := a.ID == batch[5].ID; (a.Code != 0) != wantErr {
			t.Fatalf("answer %+v", a)
		}
	}
	if n := len(r.Pending(mb)); n != 19 {
		t.Fatalf("relay holds %d, want 19", n)
	}
	r.Faults.FailPuts.Store(1)
	more := []wire.Send{{ID: [16]byte{99}, To: mb, Token: token, Envelope: []byte("x")}}
	if _, err := sender.SendBatch(ctx, more); !errors.Is(err, relayclient.ErrBusy) || !errors.Is(err, relayclient.ErrUnreachable) {
		t.Fatalf("Send to a busy relay: got %v, want ErrBusy", err)
	}
	if res, err := sender.SendBatch(ctx, more); err != nil || len(res) != 1 || res[0].Code != 0 {
		t.Fatalf("retry: got %+v, %v", res, err)
	}
}

// TestConnEnds checks that a relay going away ends the conn and fails
// requests in flight with ErrUnreachable.
func TestConnEnds(t *testing.T) {
	h := clienttest.New(t)
	r := h.StartRelay(clienttest.RelayConfig{})
	c, _ := dial(t, h, r.Link)
	r.Down()
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("conn did not notice the relay going down")
	}
	if err := c.SetToken(context.Background(), [32]byte{}); !errors.Is(err, relayclient.ErrUnreachable) {
		t.Fatalf("request on a dead conn: got %v", err)
	}
	if !errors.Is(c.Err(), relayclient.ErrUnreachable) {
		t.Fatalf("Err: got %v", c.Err())
	}
}

// serveRaw runs a hand-written relay on the harness's network: it
// completes the channel handshake and hands the channel to serve.
func serveRaw(t *testing.T, h *clienttest.Harness, addr string, serve func(*channel.Conn)) link.Relay {
	t.Helper()
	key := newKey(t)
	ln, err := h.Net.Listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		ch, err := channel.Server(context.Background(), nc, key)
		if err != nil {
			return
		}
		defer ch.Close()
		serve(ch)
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return link.Relay{Key: key.Public, Endpoints: []link.Endpoint{{Transport: "tcp", Addr: addr}}}
}

func frame(t *testing.T, m wire.Message) wire.Frame {
	f, err := wire.NewFrame(m)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestPingsAndUnknownFrames: the client answers the relay's Ping, skips a
// frame type it does not know, and still matches the answer to its
// request.
func TestPingsAndUnknownFrames(t *testing.T) {
	h := clienttest.New(t)
	pong := make(chan wire.Pong, 1)
	l := serveRaw(t, h, "192.0.2.9:1", func(ch *channel.Conn) {
		ctx := context.Background()
		f, err := ch.Recv(ctx) // the client's SetToken
		if err != nil {
			return
		}
		m, _ := wire.Decode(f)
		req := m.(wire.SetToken)
		ch.Send(ctx, frame(t, wire.Ping{Nonce: 42}))
		ch.Send(ctx, wire.Frame{Type: 0x7f, Payload: []byte("from the future")})
		if f, err = ch.Recv(ctx); err == nil {
			if m, _ := wire.Decode(f); m != nil {
				if p, ok := m.(wire.Pong); ok {
					pong <- p
				}
			}
		}
		ch.Send(ctx, frame(t, wire.OK{ReqID: req.ReqID}))
		ch.Recv(ctx)
	})
	c, err := (&relayclient.Dialer{Transports: h.Transports()}).Dial(context.Background(), l, newKey(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetToken(context.Background(), [32]byte{}); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-pong:
		if p.Nonce != 42 {
			t.Fatalf("pong nonce %d, want 42", p.Nonce)
		}
	default:
		t.Fatal("the client did not answer the Ping before its request completed")
	}
}

// TestSilentRelayIsDropped: a relay that stops answering (it reads, but
// never writes) is noticed by the pings, and the conn ends.
func TestSilentRelayIsDropped(t *testing.T) {
	h := clienttest.New(t)
	var pings atomic.Int32
	l := serveRaw(t, h, "192.0.2.9:2", func(ch *channel.Conn) {
		for {
			f, err := ch.Recv(context.Background())
			if err != nil {
				return
			}
			if f.Type == wire.TypePing {
				pings.Add(1)
			}
		}
	})
	// The in-memory network is synchronous: the relay's goroutine must
	// read the Ping before the client gives up on it and closes, so the
	// timeout is one a loaded machine keeps.
	d := &relayclient.Dialer{Transports: h.Transports(), PingInterval: 50 * time.Millisecond, RequestTimeout: 2 * time.Second}
	c, err := d.Dial(context.Background(), l, newKey(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case <-c.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("a silent relay kept the conn open")
	}
	c.Close()
	if pings.Load() == 0 {
		t.Fatal("the client never pinged")
	}
}
