package probe

import (
	"context"
	"errors"

	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/internal/relayclient"
	"github.com/ferry-im/ferry/wire"
)

// The relay-protocol exchanges of a TextProbe trial (docs/protocol.md
// section 6), spoken with the client's own relay-protocol package:
// registration, an anonymous Send, a Subscribe that drains the mailbox.

// dial opens a connection to the relay, authenticated with static,
// through the watched transport.
func (tr *textTrial) dial(static channel.KeyPair) (*relayclient.Conn, error) {
	ctx, cancel := context.WithTimeout(tr.ctx, tr.p.cfg.DialTimeout)
	defer cancel()
	return tr.p.dialer.Dial(ctx, tr.p.cfg.Relay, static)
}

// relayError is an answer of the relay that refuses a request.
type relayError struct {
	code wire.Code
	msg  string
}

func (e *relayError) Error() string { return "relay says " + e.code.String() + " (" + e.msg + ")" }

// refusal turns the relay client's refusals into a relayError.
func refusal(err error) error {
	var re *relayclient.RefusedError
	if errors.As(err, &re) {
		return &relayError{code: re.Code, msg: re.Msg}
	}
	if errors.Is(err, relayclient.ErrBusy) {
		return &relayError{code: wire.CodeUnavailable, msg: err.Error()}
	}
	return err
}

// register sets both accounts' delivery tokens on the relay.
func (tr *textTrial) register(acc *accounts) error {
	for _, a := range []*account{&acc.A, &acc.B} {
		c, err := tr.dial(a.kp)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(tr.ctx, tr.p.cfg.StepTimeout)
		err = c.SetToken(ctx, a.Token)
		cancel()
		c.Close()
		if err != nil {
			return refusal(err)
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
	ctx, cancel := context.WithTimeout(tr.ctx, tr.p.cfg.StepTimeout)
	defer cancel()
	res, err := c.SendBatch(ctx, []wire.Send{{ID: id, To: to.mailbox(), Token: to.Token, Envelope: env}})
	switch {
	case err != nil:
		return refusal(err)
	case len(res) != 1:
		return errNotDelivered
	case res[0].Code != 0:
		return &relayError{code: res[0].Code, msg: res[0].Msg}
	}
	return nil
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
	ctx, cancel := context.WithTimeout(tr.ctx, tr.p.cfg.StepTimeout)
	defer cancel()
	if err := c.Subscribe(ctx); err != nil {
		return err
	}
	var seqs []uint64
	found := false
	for {
		for _, d := range c.Take(256) {
			seqs = append(seqs, d.Seq)
			found = found || d.ID == id
		}
		drained, err := c.Drained()
		if err != nil {
			return refusal(err)
		}
		if drained {
			break
		}
		select {
		case <-c.Ready():
		case <-c.Done():
			return c.Err()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := c.Ack(ctx, seqs); err != nil {
		return err
	}
	if !found {
		return errNotDelivered
	}
	return nil
}
