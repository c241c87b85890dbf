package prekeys

import (
	"crypto/rand"
	"testing"

	"github.com/ferry-im/ferry/internal/account"
	"github.com/ferry-im/ferry/session"
)

// TestReplenish: the one-time pools are topped up only below Min, by
// Initial, with ids above every earlier one.
func TestReplenish(t *testing.T) {
	id, err := session.NewIdentity(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	a := &account.Account{Identity: id, Rand: rand.Reader}
	ps, err := Policy{Initial: 4}.Generate(rand.Reader, id)
	if err != nil {
		t.Fatal(err)
	}
	last := func() uint32 { r := ps.Records().OneTime; return RecordID(r[len(r)-1]) }
	top := last()
	if more, err := (Policy{Initial: 4, Min: 4}).Replenish(a, ps); err != nil || more {
		t.Fatalf("with 4 of each and a minimum of 4: replenished %v (%v)", more, err)
	}
	if more, err := (Policy{Initial: 4, Min: 5}).Replenish(a, ps); err != nil || !more {
		t.Fatalf("with 4 of each and a minimum of 5: replenished %v (%v)", more, err)
	}
	if x, kem := ps.OneTimeCount(); x != 8 || kem != 8 || last() <= top {
		t.Fatalf("after replenishing: %d and %d one-time prekeys, last id %d (was %d)", x, kem, last(), top)
	}
}
