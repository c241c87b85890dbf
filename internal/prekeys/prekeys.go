// Package prekeys keeps the user's prekeys in step with the relay's
// directory (docs/client.md section 2): it makes the initial set, rotates
// the signed and last-resort prekeys on schedule, tops the one-time pools
// up when introductions use them, and uploads whatever the relay lacks,
// with the delivery token, on a connection authenticated with the device
// key.
//
// It is not the session layer (which makes and uses the keys) nor the
// relay client (which carries the frames).
package prekeys

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"time"

	"github.com/ferry-im/ferry/internal/account"
	"github.com/ferry-im/ferry/internal/localstore"
	"github.com/ferry-im/ferry/internal/relayclient"
	"github.com/ferry-im/ferry/session"
	"github.com/ferry-im/ferry/wire"
)

// Policy says how many prekeys to keep and how often to rotate. The zero
// value gives the defaults.
type Policy struct {
	// Initial is how many one-time prekeys of each kind Init makes, and
	// how many Replenish adds. If zero, 32.
	Initial int
	// Min is the count of one-time prekeys of a kind below which
	// Replenish adds more. If zero, 8.
	Min int
	// Rotation is how often the signed and last-resort prekeys are
	// replaced. If zero, 7 days.
	Rotation time.Duration
}

func (p Policy) initial() int {
	if p.Initial <= 0 {
		return 32
	}
	return p.Initial
}

func (p Policy) min() int {
	if p.Min <= 0 {
		return 8
	}
	return p.Min
}

func (p Policy) rotation() time.Duration {
	if p.Rotation <= 0 {
		return 7 * 24 * time.Hour
	}
	return p.Rotation
}

// Generate makes a new identity's prekey set.
func (p Policy) Generate(rand io.Reader, id *session.Identity) (*session.PrekeySet, error) {
	return session.GeneratePrekeys(rand, id, p.initial())
}

// Register uploads the delivery token and the prekeys the relay lacks on
// a connection of its own.
func (p Policy) Register(ctx context.Context, a *account.Account) error {
	cn, err := a.Dialer.Dial(ctx, a.Relay, a.Device)
	if err != nil {
		return err
	}
	defer cn.Close()
	return p.Upload(ctx, a, cn)
}

// Replenish adds one-time prekeys to ps if a pool fell below Min, and
// reports whether it did (they then need uploading).
func (p Policy) Replenish(a *account.Account, ps *session.PrekeySet) (bool, error) {
	x, kem := ps.OneTimeCount()
	if x >= p.min() && kem >= p.min() {
		return false, nil
	}
	return true, ps.AddOneTime(a.Rand, a.Identity, p.initial())
}

// rotatedCursor holds the Unix time in milliseconds of the last rotation.
const rotatedCursor = "prekeys_rotated"

// Rotate loads the profile and its prekey set and, if Rotation has passed
// since the last rotation, rotates the signed and the last-resort prekeys
// and saves them (the previous one of each is kept, so initial messages
// made with it still work for one more period). A profile that has never
// recorded a rotation starts counting now.
func (p Policy) Rotate(tx *localstore.Tx, a *account.Account) (*localstore.Profile, *session.PrekeySet, error) {
	prof, err := tx.Profile()
	if err != nil {
		return nil, nil, err
	}
	ps, err := Load(prof)
	if err != nil {
		return nil, nil, err
	}
	last, err := tx.Cursor(rotatedCursor)
	if err != nil {
		return nil, nil, err
	}
	now := a.Now()
	if last != 0 && now.Sub(time.UnixMilli(last)) < p.rotation() {
		return prof, ps, nil
	}
	if last != 0 {
		if err := ps.RotateSigned(a.Rand, a.Identity); err != nil {
			return nil, nil, err
		}
		if err := ps.RotateLastResort(a.Rand, a.Identity); err != nil {
			return nil, nil, err
		}
		if err := Save(tx, prof, ps); err != nil {
			return nil, nil, err
		}
		a.Log.Info("rotated the signed and last-resort prekeys")
	}
	if err := tx.SetCursor(rotatedCursor, now.UnixMilli()); err != nil {
		return nil, nil, err
	}
	return prof, ps, nil
}

// Load reads the prekey set of a profile.
func Load(prof *localstore.Profile) (*session.PrekeySet, error) {
	ps := new(session.PrekeySet)
	if err := ps.UnmarshalBinary(prof.Prekeys); err != nil {
		return nil, fmt.Errorf("load prekeys: %w", err)
	}
	return ps, nil
}

// Save writes ps into the profile.
func Save(tx *localstore.Tx, prof *localstore.Profile, ps *session.PrekeySet) error {
	b, err := ps.MarshalBinary()
	if err != nil {
		return err
	}
	prof.Prekeys = b
	return tx.PutProfile(prof)
}

// Upload rotates the prekeys if due, then sends SetToken and PutPrekeys as
// needed on cn, a connection to the user's own relay authenticated with
// the device key. A signed or last-resort prekey, or a one-time prekey, is
// uploaded when its id is above the profile's UploadedID: prekey ids only
// grow, so a new key always is. The first upload carries the token and
// the signed and last-resort prekeys.
func (p Policy) Upload(ctx context.Context, a *account.Account, cn *relayclient.Conn) error {
	var prof *localstore.Profile
	var ps *session.PrekeySet
	if err := a.Store.Update(ctx, func(tx *localstore.Tx) (err error) {
		prof, ps, err = p.Rotate(tx, a)
		return err
	}); err != nil {
		return err
	}
	put, maxID := pending(prof, ps.Records())
	if !prof.Uploaded {
		if err := cn.SetToken(ctx, a.Token); err != nil {
			return fmt.Errorf("register the delivery token: %w", err)
		}
	}
	if put.Signed == nil && put.LastResort == nil && len(put.OneTime) == 0 && len(put.KEM) == 0 {
		return nil
	}
	if err := cn.PutPrekeys(ctx, put); err != nil {
		return fmt.Errorf("upload prekeys: %w", err)
	}
	a.Log.Info("uploaded prekeys", "signed", put.Signed != nil, "last_resort", put.LastResort != nil, "one_time", len(put.OneTime), "kem", len(put.KEM))
	return a.Store.Update(ctx, func(tx *localstore.Tx) error {
		p, err := tx.Profile()
		if err != nil {
			return err
		}
		p.Uploaded = true
		p.UploadedID = max(p.UploadedID, maxID)
		return tx.PutProfile(p)
	})
}

// pending returns the records the relay does not have yet and the highest
// id among them.
func pending(prof *localstore.Profile, rec session.Records) (wire.PutPrekeys, uint32) {
	var put wire.PutPrekeys
	maxID := prof.UploadedID
	if id := RecordID(rec.Signed); !prof.Uploaded || id > prof.UploadedID {
		put.Signed = rec.Signed
		maxID = max(maxID, id)
	}
	if id := RecordID(rec.LastResort); !prof.Uploaded || id > prof.UploadedID {
		put.LastResort = rec.LastResort
		maxID = max(maxID, id)
	}
	newer := func(recs [][]byte) []wire.Prekey {
		var ps []wire.Prekey
		for _, r := range recs {
			if id := RecordID(r); id > prof.UploadedID {
				ps = append(ps, wire.Prekey{ID: id, Data: r})
				maxID = max(maxID, id)
			}
		}
		return ps
	}
	put.OneTime, put.KEM = newer(rec.OneTime), newer(rec.KEM)
	return put, maxID
}

// RecordID reads the prekey id of a session prekey record:
// type(1) || id(4, big endian) || ... (docs/protocol.md section 2.3).
func RecordID(r []byte) uint32 {
	if len(r) < 5 {
		return 0
	}
	return binary.BigEndian.Uint32(r[1:5])
}
