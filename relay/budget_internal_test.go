package relay

import (
	"sync/atomic"
	"testing"
)

// TestMemPoolShedsLeastRecentlyGrown checks the frame-memory budget: a
// request that does not fit closes the accounts that grew least recently,
// never the requester's own, and refuses the requester if it is the one
// that grew least recently.
func TestMemPoolShedsLeastRecentlyGrown(t *testing.T) {
	t.Parallel()
	var shed atomic.Int32
	p := &memPool{limit: 600, shed: func() { shed.Add(1) }}
	closed := map[string]bool{}
	acct := func(name string) *frameAccount { return p.account(func() { closed[name] = true }) }
	a, b, c := acct("a"), acct("b"), acct("c")
	if !a.Reserve(300) || !b.Reserve(300) {
		t.Fatal("reservations within the budget refused")
	}
	if !c.Reserve(100) {
		t.Fatal("a newcomer was refused instead of shedding the stalest holder")
	}
	if !closed["a"] || closed["b"] || shed.Load() != 1 {
		t.Fatalf("closed %v, want only a (least recently grown)", closed)
	}
	if a.Reserve(1) {
		t.Fatal("a shed account reserved again")
	}
	a.Release(300) // a late release of a shed account changes nothing
	if got := p.inUse(); got != 400 {
		t.Fatalf("in use %d, want 400 (b 300 + c 100)", got)
	}
	// b is now the least recently grown holder: its own request that does
	// not fit is refused, and c is not closed for it.
	if b.Reserve(300) {
		t.Fatal("the least recently grown account took memory from a more recent one")
	}
	if closed["c"] {
		t.Fatal("c was shed for the stalest account")
	}
	b.Release(300)
	c.retire()
	if got := p.inUse(); got != 0 {
		t.Fatalf("in use %d after everything was given back, want 0", got)
	}
}

func TestDiskBudgetRoom(t *testing.T) {
	t.Parallel()
	var d diskBudget
	d.limit, d.free = 1000, 100
	if !d.take(1 << 40) {
		t.Fatal("an unknown disk use refused a write")
	}
	d.update(DiskUsage{Used: 900, Free: 10000})
	if d.full() {
		t.Fatal("full with 100 bytes of room")
	}
	if d.take(200) {
		t.Fatal("a write past the budget between checks was allowed")
	}
	if !d.take(60) || !d.take(40) || d.take(1) {
		t.Fatal("the room between checks was not counted exactly")
	}
	if !d.full() {
		t.Fatal("not full once the room was used")
	}
	d.update(DiskUsage{Used: 0, Free: 150})
	if d.take(51) || !d.take(50) {
		t.Fatal("DiskFree was not kept free")
	}
	d.limit = 0
	d.update(DiskUsage{Used: 1 << 40, Free: -1})
	if d.full() || !d.take(1<<30) {
		t.Fatal("no budget and no free-space reading must mean no limit")
	}
}
