package probe

import (
	"context"
	"errors"
	"fmt"

	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/wire"
)

// The relay-protocol exchanges of a TextProbe trial (docs/protocol.md
// section 6): registration, an anonymous Send, a Subscribe that drains the
// mailbox. Request ids are per connection, so one suffices.
const reqID = 1

// dial opens a channel to the relay, authenticated with static, through
// the watched transport.
func (tr *textTrial) dial(static channel.KeyPair) (*channel.Conn, error) {
	ctx, cancel := context.WithTimeout(tr.ctx, tr.p.cfg.DialTimeout)
	defer cancel()
	nc, err := tr.p.reg.Dial(ctx, tr.p.ep)
	if err != nil {
		return nil, err
	}
	c, err := (&channel.Config{Rand: tr.p.cfg.Rand, Logger: tr.p.cfg.Logger}).Client(ctx, nc, static, tr.p.cfg.Relay.Key)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

// exchange sends m (if not nil), then hands every message the relay sends
// to handle until it says done or fails; Pings are answered.
func (tr *textTrial) exchange(c *channel.Conn, m wire.Message, handle func(wire.Message) (bool, error)) error {
	ctx, cancel := context.WithTimeout(tr.ctx, tr.p.cfg.StepTimeout)
	defer cancel()
	if m != nil {
		if err := send(ctx, c, m); err != nil {
			return err
		}
	}
	for {
		f, err := c.Recv(ctx)
		if err != nil {
			return err
		}
		msg, err := wire.Decode(f)
		if errors.Is(err, wire.ErrUnknownType) {
			continue
		}
		if err != nil {
			return fmt.Errorf("decode %v frame: %w", f.Type, err)
		}
		if ping, ok := msg.(wire.Ping); ok {
			if err := send(ctx, c, wire.Pong(ping)); err != nil {
				return err
			}
			continue
		}
		if done, err := handle(msg); err != nil || done {
			return err
		}
	}
}

func send(ctx context.Context, c *channel.Conn, m wire.Message) error {
	f, err := wire.NewFrame(m)
	if err != nil {
		return err
	}
	return c.Send(ctx, f)
}

// answer handles the answer to request reqID (OK or Error), or to the
// Send of envelope id (SendOK or SendErr): it reports whether m is that
// answer, and the relay's refusal if it refused.
func answer(m wire.Message, id [16]byte) (bool, error) {
	var code wire.Code
	var msg string
	switch m := m.(type) {
	case wire.OK:
		return m.ReqID == reqID, nil
	case wire.SendOK:
		return m.ID == id, nil
	case wire.Error:
		if m.ReqID != reqID {
			return false, nil
		}
		code, msg = m.Code, m.Msg
	case wire.SendErr:
		if m.ID != id {
			return false, nil
		}
		code, msg = m.Code, m.Msg
	default:
		return false, nil
	}
	return true, &relayError{code: code, msg: msg}
}

// answerTo returns the handler of the answer to request reqID.
func answerTo(id [16]byte) func(wire.Message) (bool, error) {
	return func(m wire.Message) (bool, error) { return answer(m, id) }
}

// register sets both accounts' delivery tokens on the relay.
func (tr *textTrial) register(acc *accounts) error {
	for _, a := range []*account{&acc.A, &acc.B} {
		c, err := tr.dial(a.kp)
		if err != nil {
			return err
		}
		err = tr.exchange(c, wire.SetToken{ReqID: reqID, Token: a.Token}, answerTo([16]byte{}))
		c.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// send stores env in to's mailbox, from an anonymous connection.
func (tr *textTrial) send(to *account, id [16]byte, env []byte) error {
	kp, err := channel.GenerateKeyPair(tr.p.cfg.Rand)
	if err != nil {
		return err
	}
	c, err := tr.dial(kp)
	if err != nil {
		return err
	}
	defer c.Close()
	return tr.exchange(c, wire.Send{ID: id, To: to.mailbox(), Token: to.Token, Envelope: env}, answerTo(id))
}

// receive drains who's mailbox (the relay answers the Subscribe once the
// backlog is pushed), acknowledges everything, and fails with
// errNotDelivered unless envelope id was among it.
func (tr *textTrial) receive(who *account, id [16]byte) error {
	c, err := tr.dial(who.kp)
	if err != nil {
		return err
	}
	defer c.Close()
	var seqs []uint64
	found := false
	err = tr.exchange(c, wire.Subscribe{ReqID: reqID}, func(m wire.Message) (bool, error) {
		if d, ok := m.(wire.Deliver); ok {
			seqs = append(seqs, d.Seq)
			found = found || d.ID == id
			return false, nil
		}
		return answer(m, [16]byte{})
	})
	if err != nil {
		return err
	}
	if len(seqs) > 0 {
		// Acks are not answered: a Ping after them returns once the relay
		// has handled them.
		ctx, cancel := context.WithTimeout(tr.ctx, tr.p.cfg.StepTimeout)
		defer cancel()
		for len(seqs) > 0 {
			n := min(len(seqs), wire.MaxAcks)
			if err := send(ctx, c, wire.Ack{Seqs: seqs[:n]}); err != nil {
				return err
			}
			seqs = seqs[n:]
		}
		err := tr.exchange(c, wire.Ping{Nonce: 1}, func(m wire.Message) (bool, error) {
			_, pong := m.(wire.Pong)
			return pong, nil
		})
		if err != nil {
			return err
		}
	}
	if !found {
		return errNotDelivered
	}
	return nil
}
