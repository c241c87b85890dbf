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
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/ferry-im/ferry/internal/account"
	"github.com/ferry-im/ferry/internal/content"
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
	// CountEvery is how often a connection to the user's relay asks how
	// many one-time prekeys the relay has left (Check), by the account's
	// clock and across the profile's processes. If zero, 5 minutes.
	CountEvery time.Duration
}

func (p Policy) countEvery() time.Duration {
	if p.CountEvery <= 0 {
		return 5 * time.Minute
	}
	return p.CountEvery
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

// rotatedCursor holds the Unix time in milliseconds of the last rotation;
// countedCursor that of the last Check that asked the relay.
const (
	rotatedCursor = "prekeys_rotated"
	countedCursor = "prekeys_counted"
)

// Checked says what Check found and did.
type Checked struct {
	// Asked is set when Check asked the relay (it was due).
	Asked bool
	// OneTime and KEM are the relay's counts of one-time prekeys left.
	OneTime, KEM int
	// Added is how many one-time prekeys of each kind Check made and
	// uploaded because the relay had fewer than Min.
	Added int
	// Registered is set when the relay had lost the mailbox and Check
	// registered it again.
	Registered bool
}

// Check asks the relay, on cn (the user's own relay, device key), how
// many one-time prekeys it has left, if CountEvery has passed since the
// last time any process of the profile asked (or force is set), and:
//   - when a pool is below Min, makes Initial more of each kind and
//     uploads them: GetBundle calls drain the relay's pools, not the
//     local set, so the relay's count is what matters;
//   - when the relay answers that the mailbox is not registered
//     (NotFound or Denied: deleted after a long absence, or lost with a
//     damaged database), registers it again (Reregister).
//
// The time is recorded before asking, so a relay that keeps failing is
// asked at most once per CountEvery: Check never loops.
func (p Policy) Check(ctx context.Context, a *account.Account, cn *relayclient.Conn, force bool) (Checked, error) {
	var out Checked
	due := false
	if err := a.Store.Update(ctx, func(tx *localstore.Tx) error {
		last, err := tx.Cursor(countedCursor)
		if err != nil {
			return err
		}
		now := a.Now()
		if !force && last != 0 && now.Sub(time.UnixMilli(last)) < p.countEvery() && now.UnixMilli() >= last {
			return nil
		}
		due = true
		return tx.SetCursor(countedCursor, now.UnixMilli())
	}); err != nil || !due {
		return out, err
	}
	out.Asked = true
	oneTime, kem, err := cn.PrekeyCount(ctx)
	if relayclient.Lost(err) {
		a.Log.Warn("the relay has lost this profile's mailbox; registering it again")
		out.Registered = true
		return out, p.Reregister(ctx, a, cn)
	}
	if err != nil {
		return out, fmt.Errorf("count prekeys at the relay: %w", err)
	}
	out.OneTime, out.KEM = oneTime, kem
	if oneTime >= p.min() && kem >= p.min() {
		return out, nil
	}
	if err := a.Store.Update(ctx, func(tx *localstore.Tx) error {
		prof, err := tx.Profile()
		if err != nil {
			return err
		}
		ps, err := Load(prof)
		if err != nil {
			return err
		}
		if err := ps.AddOneTime(a.Rand, a.Identity, p.initial()); err != nil {
			return err
		}
		return Save(tx, prof, ps)
	}); err != nil {
		return out, err
	}
	out.Added = p.initial()
	a.Log.Info("the relay is low on one-time prekeys; uploading more", "one_time", oneTime, "kem", kem)
	return out, p.Upload(ctx, a, cn)
}

// Reregister registers the mailbox again on cn after the relay lost it:
// it forgets what the relay had, and Upload sends it all again (the
// profile's token, every contact's and invite's token, every prekey).
// Until an Upload succeeds, every connection to the relay tries again.
func (p Policy) Reregister(ctx context.Context, a *account.Account, cn *relayclient.Conn) error {
	if err := a.Store.Update(ctx, func(tx *localstore.Tx) error {
		prof, err := tx.Profile()
		if err != nil {
			return err
		}
		prof.Uploaded, prof.UploadedID = false, 0
		return tx.PutProfile(prof)
	}); err != nil {
		return err
	}
	return p.Upload(ctx, a, cn)
}

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

// Upload is Sync without its report.
func (p Policy) Upload(ctx context.Context, a *account.Account, cn *relayclient.Conn) error {
	_, err := p.Sync(ctx, a, cn)
	return err
}

// Sync rotates the prekeys if due, then sends SetToken (with AddToken
// for every contact's and invite's own token) and PutPrekeys as needed on
// cn, a connection to the user's own relay authenticated with
// the device key. A signed or last-resort prekey, or a one-time prekey, is
// uploaded when its id is above the profile's UploadedID: prekey ids only
// grow, so a new key always is. The first upload carries the token and
// the signed and last-resort prekeys.
//
// It reports whether it queued token contents for contacts whose own
// token the relay now has (the caller flushes the outbox then).
func (p Policy) Sync(ctx context.Context, a *account.Account, cn *relayclient.Conn) (granted bool, err error) {
	var prof *localstore.Profile
	var ps *session.PrekeySet
	if err := a.Store.Update(ctx, func(tx *localstore.Tx) (err error) {
		prof, ps, err = p.Rotate(tx, a)
		return err
	}); err != nil {
		return false, err
	}
	put, maxID := pending(prof, ps.Records())
	if !prof.Uploaded {
		if err := cn.SetToken(ctx, a.Token); err != nil {
			return false, fmt.Errorf("register the delivery token: %w", err)
		}
	}
	if granted, err = syncTokens(ctx, a, cn, prof); err != nil {
		return granted, err
	}
	if put.Signed == nil && put.LastResort == nil && len(put.OneTime) == 0 && len(put.KEM) == 0 {
		return granted, nil
	}
	if err := cn.PutPrekeys(ctx, put); err != nil {
		return granted, fmt.Errorf("upload prekeys: %w", err)
	}
	a.Log.Info("uploaded prekeys", "signed", put.Signed != nil, "last_resort", put.LastResort != nil, "one_time", len(put.OneTime), "kem", len(put.KEM))
	return granted, a.Store.Update(ctx, func(tx *localstore.Tx) error {
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

// syncTokens brings the relay's token set in line with prof.Tokens (as
// read before the upload): it adds the tokens the relay lacks (all of
// them after SetToken, when prof is not Uploaded), removes the revoked
// ones and those of invites that expired, and records what it did. The
// profile is read again to record it, since another process may have
// added tokens meanwhile.
func syncTokens(ctx context.Context, a *account.Account, cn *relayclient.Conn, prof *localstore.Profile) (granted bool, err error) {
	now := a.Now().UnixMilli()
	added, removed, held := make(map[[32]byte]bool), make(map[[32]byte]bool), make(map[[32]byte]bool)
	pendingGrant := false
	for _, t := range prof.Tokens {
		if len(t.Token) != 32 {
			continue
		}
		tok := [32]byte(t.Token)
		switch {
		case t.Revoked || (t.Contact == 0 && t.Expires != 0 && t.Expires < now):
			// Removed even if not recorded as registered: a crash may
			// have come between AddToken and recording it.
			if prof.Uploaded {
				if err := cn.RemoveToken(ctx, tok); err != nil {
					return false, fmt.Errorf("revoke a delivery token: %w", err)
				}
			}
			removed[tok] = true
		case t.Blocked:
			if t.Registered && prof.Uploaded {
				if err := cn.RemoveToken(ctx, tok); err != nil {
					return false, fmt.Errorf("revoke a delivery token: %w", err)
				}
				held[tok] = true
			}
		case !t.Registered || !prof.Uploaded:
			if err := cn.AddToken(ctx, tok); err != nil {
				return false, fmt.Errorf("register a delivery token: %w", err)
			}
			added[tok] = true
			pendingGrant = pendingGrant || t.Grant
		default:
			pendingGrant = pendingGrant || t.Grant
		}
	}
	if len(added) == 0 && len(removed) == 0 && len(held) == 0 && !pendingGrant {
		return false, nil
	}
	err = a.Store.Update(ctx, func(tx *localstore.Tx) error {
		granted = false
		p, err := tx.Profile()
		if err != nil {
			return err
		}
		kept := p.Tokens[:0]
		for _, t := range p.Tokens {
			if len(t.Token) == 32 && removed[[32]byte(t.Token)] && (t.Revoked || t.Contact == 0) {
				continue
			}
			if len(t.Token) == 32 && added[[32]byte(t.Token)] {
				t.Registered = true
			}
			if len(t.Token) == 32 && held[[32]byte(t.Token)] && t.Blocked {
				t.Registered = false
			}
			kept = append(kept, t)
		}
		p.Tokens = kept
		if pendingGrant {
			if granted, err = grantTokens(tx, a, p); err != nil {
				return err
			}
		}
		return tx.PutProfile(p)
	})
	return granted, err
}

// grantTokens sends each contact whose own token the relay now has, and
// which it was not sent yet (OwnToken.Grant), a token content with it,
// and reports whether it queued any. The caller writes p.
func grantTokens(tx *localstore.Tx, a *account.Account, p *localstore.Profile) (bool, error) {
	queued := false
	for i, t := range p.Tokens {
		if !t.Grant || !t.Registered || t.Revoked || len(t.Token) != 32 {
			continue
		}
		p.Tokens[i].Grant = false
		k, err := tx.Contact(t.Contact)
		if errors.Is(err, localstore.ErrNotFound) {
			continue
		}
		if err != nil {
			return queued, err
		}
		if !bytes.Equal(k.MyToken, t.Token) || k.Blocked || len(k.Session) == 0 {
			continue
		}
		s, err := a.Session(k)
		if err != nil {
			return queued, err
		}
		id, err := a.NewID()
		if err != nil {
			return queued, err
		}
		c := &content.Content{ID: id, Sent: a.Now().UnixMilli(), Body: &content.Token{Token: [32]byte(t.Token)}}
		if err := a.Seal(tx, k, s, c); err != nil {
			return queued, err
		}
		k.Grant = id
		if err := account.SaveSession(k, s); err != nil {
			return queued, err
		}
		if err := tx.PutContact(k); err != nil {
			return queued, err
		}
		queued = true
	}
	return queued, nil
}
