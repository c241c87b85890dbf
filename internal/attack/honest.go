package attack

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/wire"
)

// honest is the honest pair: a sender on a throwaway key and the victim's
// subscribed device, both from 127.0.0.1, which acknowledges what it is
// delivered.
type honest struct {
	e          *Env
	sender     *channel.Conn
	recipient  *channel.Conn
	readersEnd sync.WaitGroup

	// mu protects the fields below.
	mu        sync.Mutex
	next      int
	waiting   map[[16]byte]chan struct{} // sends waiting for their Deliver
	answers   map[[16]byte]chan wire.Message
	acked     map[[16]byte]bool // the relay answered SendOK
	delivered map[[16]byte]bool
	toAck     []uint64 // delivered seqs not yet acknowledged
	stopAcks  chan struct{}
}

// errRefused is a send the relay refused with a temporary code.
var errRefused = errors.New("refused for now")

func newHonest(ctx context.Context, e *Env) (*honest, error) {
	h := &honest{e: e, waiting: map[[16]byte]chan struct{}{}, answers: map[[16]byte]chan wire.Message{},
		acked: map[[16]byte]bool{}, delivered: map[[16]byte]bool{}, stopAcks: make(chan struct{})}
	key, err := channel.GenerateKeyPair(rand.Reader)
	if err != nil {
		return nil, err
	}
	local := net.IPv4(127, 0, 0, 1)
	if h.sender, err = connect(ctx, e.Relay.Link, key, local); err != nil {
		return nil, fmt.Errorf("honest sender: %w", err)
	}
	if h.recipient, err = connect(ctx, e.Relay.Link, e.Victim, local); err != nil {
		h.sender.Close()
		return nil, fmt.Errorf("honest recipient: %w", err)
	}
	subscribed := make(chan struct{})
	h.readersEnd.Add(3)
	go h.readSender()
	go h.readRecipient(subscribed)
	go h.ackLoop()
	if err := send(ctx, h.recipient, wire.Subscribe{ReqID: 1}); err != nil {
		h.close()
		return nil, err
	}
	select {
	case <-subscribed:
	case <-time.After(30 * time.Second):
		h.close()
		return nil, errors.New("honest recipient: no answer to its Subscribe within 30s")
	}
	return h, nil
}

func (h *honest) close() {
	close(h.stopAcks)
	h.sender.Close()
	h.recipient.Close()
	h.readersEnd.Wait()
}

// readSender routes SendOK and SendErr to the sends waiting for them.
func (h *honest) readSender() {
	defer h.readersEnd.Done()
	for {
		f, err := h.sender.Recv(context.Background())
		if err != nil {
			return
		}
		m, err := wire.Decode(f)
		var id [16]byte
		switch v := m.(type) {
		case wire.SendOK:
			id = v.ID
		case wire.SendErr:
			id = v.ID
		default:
			continue
		}
		if err == nil {
			h.mu.Lock()
			if ch := h.answers[id]; ch != nil {
				ch <- m
			}
			h.mu.Unlock()
		}
	}
}

// readRecipient records deliveries, acknowledges each, and closes
// subscribed at the Subscribe's OK.
func (h *honest) readRecipient(subscribed chan struct{}) {
	defer h.readersEnd.Done()
	for {
		f, err := h.recipient.Recv(context.Background())
		if err != nil {
			return
		}
		m, err := wire.Decode(f)
		if err != nil {
			continue
		}
		switch v := m.(type) {
		case wire.OK:
			if v.ReqID == 1 {
				close(subscribed)
			}
		case wire.Deliver:
			h.mu.Lock()
			h.delivered[v.ID] = true
			if ch := h.waiting[v.ID]; ch != nil {
				close(ch)
				delete(h.waiting, v.ID)
			}
			h.toAck = append(h.toAck, v.Seq)
			h.mu.Unlock()
		}
	}
}

// ackLoop acknowledges what was delivered every 10 ms, in batches, as a
// client does.
func (h *honest) ackLoop() {
	defer h.readersEnd.Done()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-h.stopAcks:
			return
		case <-t.C:
		}
		h.mu.Lock()
		seqs := h.toAck[:min(len(h.toAck), wire.MaxAcks)]
		h.toAck = h.toAck[len(seqs):]
		h.mu.Unlock()
		if len(seqs) > 0 {
			send(context.Background(), h.recipient, wire.Ack{Seqs: seqs})
		}
	}
}

// roundTrip sends one envelope and returns the time until the recipient
// had it.
func (h *honest) roundTrip(ctx context.Context) (time.Duration, error) {
	h.mu.Lock()
	h.next++
	id := [16]byte{'h', byte(h.next >> 24), byte(h.next >> 16), byte(h.next >> 8), byte(h.next)}
	arrived, answer := make(chan struct{}), make(chan wire.Message, 1)
	h.waiting[id], h.answers[id] = arrived, answer
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.waiting, id)
		delete(h.answers, id)
		h.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := send(ctx, h.sender, wire.Send{ID: id, To: h.e.VictimBox, Token: honestToken, Envelope: make([]byte, 353)}); err != nil {
		return 0, err
	}
	select {
	case m := <-answer:
		if e, ok := m.(wire.SendErr); ok {
			if e.Code.Temporary() {
				return 0, errRefused
			}
			return 0, fmt.Errorf("send refused: %v", e)
		}
		h.mu.Lock()
		h.acked[id] = true
		h.mu.Unlock()
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	select {
	case <-arrived:
		return time.Since(start), nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// lost drains the victim's mailbox on a new connection and counts the
// envelopes acknowledged to the sender that never reached the recipient.
func (h *honest) lost(ctx context.Context) (int, error) {
	c, err := connect(ctx, h.e.Relay.Link, h.e.Victim, net.IPv4(127, 0, 0, 1))
	if err != nil {
		return 0, fmt.Errorf("drain the victim's mailbox: %w", err)
	}
	defer c.Close()
	if err := send(ctx, c, wire.Subscribe{ReqID: 2}); err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		f, err := c.Recv(ctx)
		if err != nil {
			return 0, fmt.Errorf("drain the victim's mailbox: %w", err)
		}
		m, err := wire.Decode(f)
		if err != nil {
			continue
		}
		if d, ok := m.(wire.Deliver); ok {
			h.mu.Lock()
			h.delivered[d.ID] = true
			h.mu.Unlock()
			send(ctx, c, wire.Ack{Seqs: []uint64{d.Seq}})
		}
		if ok, isOK := m.(wire.OK); isOK && ok.ReqID == 2 {
			break
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for id := range h.acked {
		if !h.delivered[id] {
			n++
		}
	}
	return n, nil
}

// freshRoundTrip connects a new sender, as a client that just came online
// does, and returns the time from dialling until the recipient had its
// envelope.
func (h *honest) freshRoundTrip(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	c, err := connect(ctx, h.e.Relay.Link, newKey(), net.IPv4(127, 0, 0, 1))
	if err != nil {
		return 0, fmt.Errorf("a new honest connection: %w", err)
	}
	defer c.Close()
	h.mu.Lock()
	h.next++
	id := [16]byte{'n', byte(h.next >> 24), byte(h.next >> 16), byte(h.next >> 8), byte(h.next)}
	arrived := make(chan struct{})
	h.waiting[id] = arrived
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.waiting, id)
		h.mu.Unlock()
	}()
	m, err := request[wire.Message](ctx, c, wire.Send{ID: id, To: h.e.VictimBox, Token: honestToken, Envelope: make([]byte, 353)})
	if err != nil {
		return 0, err
	}
	if e, ok := m.(wire.SendErr); ok {
		if e.Code.Temporary() {
			return 0, errRefused
		}
		return 0, fmt.Errorf("send refused: %v", e)
	}
	h.mu.Lock()
	h.acked[id] = true
	h.mu.Unlock()
	select {
	case <-arrived:
		return time.Since(start), nil
	case <-time.After(10 * time.Second):
		return 0, errors.New("no delivery within 10s")
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}
