package ferry

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/internal/localstore"
	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/session"
	"github.com/ferry-im/ferry/wire"
)

// frameConn is a secure channel to a relay; *channel.Conn implements it.
// Send is safe for concurrent use, Recv is called by one goroutine, Close
// is idempotent and unblocks Recv.
type frameConn interface {
	Send(ctx context.Context, f wire.Frame) error
	Recv(ctx context.Context) (wire.Frame, error)
	Close() error
}

var _ frameConn = (*channel.Conn)(nil)

// dialFunc opens a channel to relay r authenticated with the static key.
type dialFunc func(ctx context.Context, r link.Relay, static channel.KeyPair) (frameConn, error)

// dialChannel tries r's endpoints in order over the transports it knows.
func (c *Client) dialChannel(ctx context.Context, r link.Relay, static channel.KeyPair) (frameConn, error) {
	var errs []error
	for _, e := range r.Endpoints {
		dctx, cancel := context.WithTimeout(ctx, dialTimeout)
		nc, err := c.cfg.Transports.Dial(dctx, e)
		if err != nil {
			cancel()
			errs = append(errs, err)
			continue
		}
		cc, err := (&channel.Config{Rand: c.rand, Logger: c.log}).Client(dctx, nc, static, r.Key)
		cancel()
		if err != nil {
			nc.Close()
			errs = append(errs, err)
			continue
		}
		return cc, nil
	}
	return nil, fmt.Errorf("%w: %v", ErrUnreachable, errors.Join(errs...))
}

// conn is a frameConn with an owned reader goroutine that hands frames to
// in. Close stops the goroutine and waits for it.
type conn struct {
	fc   frameConn
	in   chan wire.Frame
	done chan struct{} // closed when the reader exits
	err  error         // why the reader exited; read after done
	quit chan struct{} // closed by Close
	once sync.Once
	wg   sync.WaitGroup
}

func newConn(fc frameConn) *conn {
	cn := &conn{fc: fc, in: make(chan wire.Frame, 64), done: make(chan struct{}), quit: make(chan struct{})}
	cn.wg.Add(1)
	go func() {
		defer cn.wg.Done()
		defer close(cn.done)
		for {
			f, err := fc.Recv(context.Background())
			if err != nil {
				cn.err = err
				return
			}
			select {
			case cn.in <- f:
			case <-cn.quit:
				return
			}
		}
	}()
	return cn
}

func (cn *conn) send(ctx context.Context, m wire.Message) error {
	f, err := wire.NewFrame(m)
	if err != nil {
		return err
	}
	return cn.fc.Send(ctx, f)
}

// next returns the next decoded frame, skipping unknown types, or an error
// if the connection fails or the timeout passes.
func (cn *conn) next(ctx context.Context, timeout time.Duration) (wire.Message, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case f := <-cn.in:
			m, err := wire.Decode(f)
			if errors.Is(err, wire.ErrUnknownType) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("decode %v frame: %w", f.Type, err)
			}
			return m, nil
		case <-cn.done:
			return nil, fmt.Errorf("%w: connection lost: %v", ErrUnreachable, cn.err)
		case <-t.C:
			return nil, fmt.Errorf("%w: no answer from the relay", ErrUnreachable)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Close closes the channel and waits for the reader. It is idempotent.
func (cn *conn) Close() error {
	var err error
	cn.once.Do(func() {
		err = cn.fc.Close()
		close(cn.quit)
	})
	cn.wg.Wait()
	return err
}

// request sends m and waits for the OK or Error answering reqID, handing
// every other frame to other (which may be nil).
func (cn *conn) request(ctx context.Context, m wire.Message, reqID uint32, other func(wire.Message) error) error {
	if err := cn.send(ctx, m); err != nil {
		return fmt.Errorf("%w: %v", ErrUnreachable, err)
	}
	for {
		r, err := cn.next(ctx, responseTimeout)
		if err != nil {
			return err
		}
		switch r := r.(type) {
		case wire.OK:
			if r.ReqID == reqID {
				return nil
			}
		case wire.Error:
			if r.ReqID == reqID {
				return fmt.Errorf("relay refused %v: %s (%s)", m.Type(), r.Code, r.Msg)
			}
		default:
			if other != nil {
				if err := other(r); err != nil {
					return err
				}
			}
		}
	}
}

// register uploads the delivery token and the prekeys the relay lacks, on
// its own authenticated connection.
func (c *Client) register(ctx context.Context) error {
	fc, err := c.dial(ctx, c.relay, c.device)
	if err != nil {
		return err
	}
	cn := newConn(fc)
	defer cn.Close()
	return c.upload(ctx, cn, nil)
}

// upload sends SetToken and PutPrekeys as needed on cn, an authenticated
// connection to the user's own relay.
// A new signed prekey or last-resort ML-KEM prekey is uploaded whenever
// its id is above UploadedID: prekey ids only grow, so a rotated key always
// is. It first rotates both keys if they are due (rotatePrekeys).
func (c *Client) upload(ctx context.Context, cn *conn, other func(wire.Message) error) error {
	var prof *localstore.Profile
	var ps *session.PrekeySet
	if err := c.store.Update(ctx, func(tx *localstore.Tx) (err error) {
		prof, ps, err = c.rotatePrekeys(tx)
		return err
	}); err != nil {
		return err
	}
	rec := ps.Records()
	put := wire.PutPrekeys{ReqID: 2}
	maxID := prof.UploadedID
	// The first upload always carries the signed and last-resort prekeys.
	if id := recordID(rec.Signed); !prof.Uploaded || id > prof.UploadedID {
		put.Signed = rec.Signed
		maxID = max(maxID, id)
	}
	if id := recordID(rec.LastResort); !prof.Uploaded || id > prof.UploadedID {
		put.LastResort = rec.LastResort
		maxID = max(maxID, id)
	}
	newer := func(recs [][]byte) []wire.Prekey {
		var ps []wire.Prekey
		for _, r := range recs {
			if id := recordID(r); id > prof.UploadedID {
				ps = append(ps, wire.Prekey{ID: id, Data: r})
				maxID = max(maxID, id)
			}
		}
		return ps
	}
	put.OneTime, put.KEM = newer(rec.OneTime), newer(rec.KEM)
	if !prof.Uploaded {
		if err := cn.request(ctx, wire.SetToken{ReqID: 1, Token: c.token}, 1, other); err != nil {
			return err
		}
	}
	if put.Signed == nil && put.LastResort == nil && len(put.OneTime) == 0 && len(put.KEM) == 0 {
		return nil
	}
	if err := cn.request(ctx, put, 2, other); err != nil {
		return err
	}
	c.log.Info("uploaded prekeys", "signed", put.Signed != nil, "last_resort", put.LastResort != nil, "one_time", len(put.OneTime), "kem", len(put.KEM))
	return c.store.Update(ctx, func(tx *localstore.Tx) error {
		p, err := tx.Profile()
		if err != nil {
			return err
		}
		p.Uploaded = true
		p.UploadedID = max(p.UploadedID, maxID)
		return tx.PutProfile(p)
	})
}

// prekeyRotation is how often the signed prekey and the last-resort ML-KEM
// prekey are replaced (docs/client.md section 2). The previous one of each
// is kept, so initial messages made with it still work for one more period.
const prekeyRotation = 7 * 24 * time.Hour

// rotatedCursor holds the Unix time in milliseconds of the last rotation.
const rotatedCursor = "prekeys_rotated"

// rotatePrekeys loads the profile and its prekey set and, if
// prekeyRotation has passed since the last rotation, rotates the signed
// and the last-resort prekeys and saves them. A profile that has never
// recorded a rotation starts counting now.
func (c *Client) rotatePrekeys(tx *localstore.Tx) (*localstore.Profile, *session.PrekeySet, error) {
	prof, err := tx.Profile()
	if err != nil {
		return nil, nil, err
	}
	ps := new(session.PrekeySet)
	if err := ps.UnmarshalBinary(prof.Prekeys); err != nil {
		return nil, nil, fmt.Errorf("load prekeys: %w", err)
	}
	last, err := tx.Cursor(rotatedCursor)
	if err != nil {
		return nil, nil, err
	}
	now := c.now()
	if last != 0 && now.Sub(time.UnixMilli(last)) < prekeyRotation {
		return prof, ps, nil
	}
	if last != 0 {
		if err := ps.RotateSigned(c.rand, c.identity); err != nil {
			return nil, nil, err
		}
		if err := ps.RotateLastResort(c.rand, c.identity); err != nil {
			return nil, nil, err
		}
		if prof.Prekeys, err = ps.MarshalBinary(); err != nil {
			return nil, nil, err
		}
		if err := tx.PutProfile(prof); err != nil {
			return nil, nil, err
		}
		c.log.Info("rotated the signed and last-resort prekeys")
	}
	if err := tx.SetCursor(rotatedCursor, now.UnixMilli()); err != nil {
		return nil, nil, err
	}
	return prof, ps, nil
}

// recordID reads the prekey id of a session prekey record:
// type(1) || id(4, big endian) || ... (docs/protocol.md section 2.3).
func recordID(r []byte) uint32 {
	if len(r) < 5 {
		return 0
	}
	return binary.BigEndian.Uint32(r[1:5])
}
