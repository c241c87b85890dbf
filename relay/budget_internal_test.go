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
	big := func() bool { return false }
	d.limit, d.free = 1000, 100
	if !d.take(1<<40, big) {
		t.Fatal("an unknown disk use refused a write")
	}
	d.update(DiskUsage{Used: 900, Free: 10000})
	if d.full() {
		t.Fatal("full with 100 bytes of room")
	}
	if d.take(200, big) {
		t.Fatal("a write past the budget between checks was allowed")
	}
	if !d.take(60, big) || !d.take(40, big) || d.take(1, big) {
		t.Fatal("the room between checks was not counted exactly")
	}
	if !d.full() {
		t.Fatal("not full once the room was used")
	}
	d.update(DiskUsage{Used: 0, Free: 150})
	if d.take(51, big) || !d.take(50, big) {
		t.Fatal("DiskFree was not kept free")
	}
	d.limit = 0
	d.update(DiskUsage{Used: 1 << 40, Free: -1})
	if d.full() || !d.take(1<<30, big) {
		t.Fatal("no budget and no free-space reading must mean no limit")
	}
}

// TestDiskBudgetReserve: the last DiskReserve bytes go only to writes that
// are small, the low state says so, and a spent budget refuses even those.
func TestDiskBudgetReserve(t *testing.T) {
	t.Parallel()
	d := diskBudget{limit: 1000, reserve: 300}
	asked := 0
	small := func() bool { asked++; return true }
	big := func() bool { asked++; return false }
	d.update(DiskUsage{Used: 0, Free: -1})
	if !d.take(700, big) || asked != 0 {
		t.Fatalf("a write that leaves the reserve whole was refused or asked whether it is small (%d)", asked)
	}
	if d.low() || d.full() {
		t.Fatal("low or full with the reserve whole")
	}
	if d.take(1, big) {
		t.Fatal("a write to a big mailbox took from the reserve")
	}
	if asked != 1 {
		t.Fatalf("asked %d times whether the write is small, want 1", asked)
	}
	if !d.take(299, small) || !d.low() || d.full() {
		t.Fatal("a small write within the reserve was refused, or the state is not low and not full")
	}
	if d.take(2, small) {
		t.Fatal("a small write past the whole budget was allowed")
	}
	if !d.take(1, small) || !d.full() {
		t.Fatal("the last byte of the reserve was not counted exactly")
	}
	d.update(DiskUsage{Used: 100, Free: -1})
	if d.low() {
		t.Fatal("still low after space was freed")
	}
}
