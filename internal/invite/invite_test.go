package invite

import (
	"context"
	"encoding/binary"
	"testing"
	"time"

	"github.com/ferry-im/ferry/internal/localstore"
)

func TestUniqueName(t *testing.T) {
	ks := []*localstore.Contact{{Name: "bob"}, {Name: "bob-2"}, {Name: "carol"}}
	for _, tt := range []struct{ want, got string }{
		{"bob", "bob-3"}, {"dave", "dave"}, {"carol", "carol-2"},
		// No contact can pass for Ferry's notices.
		{"ferry", "ferry (contact)"}, {"[Ferry]", "[Ferry] (contact)"}, {"* FERRY", "* FERRY (contact)"}, {"ferryman", "ferryman"},
	} {
		if got := UniqueName(ks, tt.want); got != tt.got {
			t.Errorf("UniqueName(%q): got %q, want %q", tt.want, got, tt.got)
		}
	}
}

// TestCheck plays each verdict: a fresh secret is taken once, a used one
// names the contact that used it (every time), an unknown one and an
// expired one are refused.
func TestCheck(t *testing.T) {
	ctx := context.Background()
	s, err := localstore.Create(ctx, t.TempDir(), localstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	secret := func(issued time.Time, b byte) [16]byte {
		var sec [16]byte
		binary.BigEndian.PutUint32(sec[:4], uint32(issued.Unix()))
		sec[15] = b
		return sec
	}
	fresh, old := secret(now, 1), secret(now.Add(-TTL-time.Hour), 2)
	err = s.Update(ctx, func(tx *localstore.Tx) error {
		for _, sec := range [][16]byte{fresh, old} {
			if err := tx.AddInvite(sec[:], now); err != nil {
				return err
			}
		}
		bob := &localstore.Contact{Name: "bob"}
		if err := tx.PutContact(bob); err != nil {
			return err
		}
		ks := []*localstore.Contact{bob}
		for _, tt := range []struct {
			name   string
			secret [16]byte
			want   Verdict
			first  *localstore.Contact
		}{
			{"fresh", fresh, Accepted, nil},
			{"expired", old, Expired, nil},
			{"unknown", secret(now, 3), Unknown, nil},
		} {
			v, first, err := Check(tx, ks, tt.secret, now)
			if err != nil || v != tt.want || first != tt.first {
				t.Errorf("%s: got %v, %v (%v), want %v", tt.name, v, first, err, tt.want)
			}
			if v == Accepted {
				if err := MarkUsed(tx, tt.secret, bob, now); err != nil {
					return err
				}
			}
		}
		for range 2 {
			if v, first, err := Check(tx, ks, fresh, now); err != nil || v != Used || first != bob {
				t.Errorf("second use: got %v, %v (%v), want Used by bob", v, first, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
