package relay

import (
	"container/list"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// Budgets bound what the relay holds as a whole, whoever asks for it: the
// per-key, per-address and per-mailbox Limits stop one client, budgets
// stop many. When a budget is spent the relay sheds what it values least
// (docs/operations.md, "Budgets and limits"): handshakes still in progress
// first: the oldest of the address with the most of them (a flood sheds
// itself, not others' few), or, for a newcomer from that very address
// (users behind one NAT), the oldest anywhere if it is at least half a
// second old; then authenticated
// connections that have been idle longest, unsubscribed before subscribed,
// from the address with the most connections; a connection that completed
// a frame within ActiveWindow is never shed, and if only such connections
// are left, a newcomer is refused instead.
//
// A zero field takes its default; a negative one disables that budget.
type Budgets struct {
	// Memory is the relay's memory target in bytes. Default 1 GiB. The
	// defaults of Conns, FrameMemory, SendMemory and QueueMemory are
	// shares of it; cmd/ferry-relay also makes it the Go runtime's soft
	// memory limit.
	Memory int64
	// Conns bounds the connections served at once, handshakes included.
	// Default Memory / 32 KiB, but at most 90% of the process's open-file
	// limit less 64 where that limit can be read (the listener, the
	// database and the metrics server need descriptors too).
	Conns int
	// Handshakes bounds the channel handshakes in progress. Default
	// Conns / 16, at least 64.
	Handshakes int
	// FrameMemory bounds the reassembly buffers of frames in transit,
	// over all connections. When it is spent the connection whose frames
	// have grown least recently is closed. Default Memory / 4.
	FrameMemory int64
	// SendMemory bounds the envelope bytes received and not yet stored,
	// over all connections; past it connections wait before their next
	// Send is read. Default Memory / 8.
	SendMemory int64
	// QueueMemory bounds the envelope bytes queued for push, over all
	// subscribed connections; past it new envelopes are not queued but
	// read from the store when the subscriber catches up. Default
	// Memory / 8.
	QueueMemory int64
	// Disk bounds the bytes the store may use (Sizer.DiskUsage's Used).
	// Zero means no bound of its own; DiskFree still applies.
	Disk int64
	// DiskFree is the space the relay leaves free on the file system that
	// holds the store. Default 1 GiB.
	//
	// When Disk or DiskFree is reached, Sends of new envelopes, SetToken,
	// AddToken and PutPrekeys are refused with Unavailable ("relay
	// storage is full") until space is freed; Acks, reads and clean-up go
	// on. The relay checks every DiskCheckInterval and counts the bytes
	// it accepts in between. Stores that are not Sizers have no disk
	// budget.
	DiskFree int64
	// DiskReserve is the last part of the disk budget, kept for envelopes
	// to mailboxes that hold less than ReserveMailboxBytes pending: once
	// less than DiskReserve is left, a Send to a mailbox holding more
	// (one a flooder filled, or whose owner stays away) is refused, and
	// so are SetToken, AddToken and PutPrekeys, while the text of users
	// who read their mail still gets through until the budget is spent.
	// Default 64 MiB, and at most Disk / 8 where Disk is set.
	DiskReserve int64
	// DiskCheckInterval is how often the store's disk use is read.
	// Default one second.
	DiskCheckInterval time.Duration
	// ActiveWindow is how recently a connection must have completed a
	// frame to be safe from shedding. Default 10 seconds.
	ActiveWindow time.Duration
}

// ReserveMailboxBytes is how little a mailbox must hold pending for a
// Send to it to draw on Budgets.DiskReserve.
const ReserveMailboxBytes = 1 << 20

// connCost is the memory a connection is assumed to cost when Conns is
// derived from Memory: an idle authenticated connection measures about
// 16 KiB (docs/benchmarks.md); the rest is headroom for its traffic.
const connCost = 32 << 10

// withDefaults returns b with defaults applied; disabled budgets are 0.
func (b Budgets) withDefaults() Budgets {
	size := func(v *int64, def int64) {
		switch {
		case *v == 0:
			*v = def
		case *v < 0:
			*v = 0
		}
	}
	size(&b.Memory, 1<<30)
	switch {
	case b.Conns == 0:
		b.Conns = int(min(b.Memory/connCost, 1<<30))
		if n := openFileLimit(); n > 0 {
			b.Conns = min(b.Conns, max(n*9/10-64, 1))
		}
	case b.Conns < 0:
		b.Conns = 0
	}
	switch {
	case b.Handshakes == 0:
		b.Handshakes = max(b.Conns/16, 64)
	case b.Handshakes < 0:
		b.Handshakes = 0
	}
	size(&b.FrameMemory, b.Memory/4)
	size(&b.SendMemory, b.Memory/8)
	size(&b.QueueMemory, b.Memory/8)
	b.Disk = max(b.Disk, 0)
	size(&b.DiskFree, 1<<30)
	size(&b.DiskReserve, 64<<20)
	if b.Disk > 0 {
		b.DiskReserve = min(b.DiskReserve, b.Disk/8)
	}
	if b.DiskCheckInterval <= 0 {
		b.DiskCheckInterval = time.Second
	}
	switch {
	case b.ActiveWindow == 0:
		b.ActiveWindow = 10 * time.Second
	case b.ActiveWindow < 0:
		b.ActiveWindow = 0
	}
	return b
}

// Reasons a connection is refused before its handshake.
var (
	errAddrFull  = errors.New("too many connections from this address")
	errRelayFull = errors.New("the relay is at its connection budget and every connection is active")
)

// slot is one connection counted by a connBudget, from before its
// handshake until it ends.
type slot struct {
	addr  string
	close func()        // closes the connection; called when it is shed
	conn  *conn         // set once the handshake is done
	elem  *list.Element // in the handshake list while handshaking
	aelem *list.Element // in its address's handshake list while handshaking
	start time.Duration // when it was admitted (connBudget.mono)
	gone  bool          // released or shed (connBudget.mu held)
}

// minShedAge is how long a handshake in progress is safe from being shed
// for a newcomer from its own busiest address: an honest one finishes
// well within it (one round trip).
const minShedAge = 500 * time.Millisecond

// addrSlots is what a connBudget counts for one source address.
type addrSlots struct {
	conns      int
	handshakes list.List // *slot, oldest first
}

// connBudget admits connections within Budgets.Conns, Budgets.Handshakes
// and Limits.ConnsPerAddr, shedding others to make room (see Budgets).
type connBudget struct {
	maxConns, maxHandshakes, perAddr int
	active                           time.Duration
	mono                             func() time.Duration // time since the server started
	shed                             func(reason string)  // counts a shed or refused connection

	// mu protects the fields below and every slot's fields but close.
	mu         sync.Mutex
	conns      int
	handshakes list.List // *slot in handshake, oldest first
	addrs      map[string]*addrSlots
	hsAddrs    map[string]*addrSlots // the addresses with handshakes in progress
	open       map[*slot]struct{}    // slots whose handshake is done
}

func newConnBudget(b Budgets, perAddr int, mono func() time.Duration, shed func(string)) *connBudget {
	return &connBudget{
		maxConns: b.Conns, maxHandshakes: b.Handshakes, perAddr: perAddr,
		active: b.ActiveWindow, mono: mono, shed: shed,
		addrs: make(map[string]*addrSlots), hsAddrs: make(map[string]*addrSlots),
		open: make(map[*slot]struct{}),
	}
}

// admit counts a new connection from addr, shedding others if a budget is
// spent, or refuses it. close must close the new connection.
func (b *connBudget) admit(addr string, close func()) (*slot, error) {
	b.mu.Lock()
	a := b.addrs[addr]
	if a == nil {
		a = &addrSlots{}
	}
	if b.perAddr > 0 && a.conns >= b.perAddr {
		b.mu.Unlock()
		b.shed("addr_full")
		return nil, errAddrFull
	}
	now := b.mono()
	var victims []*slot
	refuse := func() (*slot, error) {
		b.mu.Unlock()
		for _, v := range victims {
			v.close()
		}
		b.shed("refused")
		return nil, errRelayFull
	}
	if b.maxHandshakes > 0 && b.handshakes.Len() >= b.maxHandshakes {
		v := b.handshakeVictimLocked(addr, now)
		if v == nil {
			return refuse()
		}
		b.dropLocked(v)
		victims = append(victims, v)
		b.shed("handshake")
	}
	if b.maxConns > 0 && b.conns >= b.maxConns {
		v, reason := b.victimLocked(addr, now)
		if v == nil {
			return refuse()
		}
		b.dropLocked(v)
		victims = append(victims, v)
		b.shed(reason)
	}
	s := &slot{addr: addr, close: close, start: now}
	b.addrs[addr] = a
	a.conns++
	b.conns++
	s.elem = b.handshakes.PushBack(s)
	s.aelem = a.handshakes.PushBack(s)
	b.hsAddrs[addr] = a
	b.mu.Unlock()
	for _, v := range victims {
		v.close()
	}
	return s, nil
}

// victimLocked picks the connection to shed for a newcomer from addr: a
// handshake in progress if one may be shed (handshakeVictimLocked), else
// the least valuable idle connection, else nil.
func (b *connBudget) victimLocked(addr string, now time.Duration) (*slot, string) {
	if v := b.handshakeVictimLocked(addr, now); v != nil {
		return v, "handshake"
	}
	if v := b.idleVictimLocked(now); v != nil {
		return v, "idle"
	}
	return nil, ""
}

// handshakeVictimLocked picks the handshake in progress to shed for a
// newcomer from addr: the oldest of the address with the most handshakes
// in progress, however young, if that is another address (a flood comes
// from its own addresses, so it sheds itself, not the few handshakes of
// others); if the newcomer's own address is the busiest (many users
// behind one NAT), the oldest handshake anywhere, if it is at least
// minShedAge old. nil if there is none to shed.
func (b *connBudget) handshakeVictimLocked(addr string, now time.Duration) *slot {
	var heaviest string
	n := 0
	for a, hs := range b.hsAddrs {
		if l := hs.handshakes.Len(); l > n || l == n && a == addr {
			heaviest, n = a, l
		}
	}
	if n == 0 {
		return nil
	}
	if heaviest != addr {
		return b.hsAddrs[heaviest].handshakes.Front().Value.(*slot)
	}
	f := b.handshakes.Front()
	if now-f.Value.(*slot).start < minShedAge {
		return nil
	}
	return f.Value.(*slot)
}

// shedSample is how many open connections are looked at to choose one to
// shed (a random sample: map iteration starts anywhere).
const shedSample = 64

// idleVictimLocked returns, among a sample of open connections idle for
// at least the active window, the least valuable: unsubscribed before
// subscribed, then from the address with the most connections, then idle
// the longest. nil if the sample has no idle connection.
func (b *connBudget) idleVictimLocked(now time.Duration) *slot {
	var best *slot
	var bestIdle time.Duration
	n := 0
	for s := range b.open {
		if n++; n > shedSample {
			break
		}
		idle := now - time.Duration(s.conn.lastFrame.Load())
		if idle < b.active {
			continue
		}
		if best == nil || b.lessValuable(s, idle, best, bestIdle) {
			best, bestIdle = s, idle
		}
	}
	return best
}

// lessValuable reports whether s (idle for idle) is worth less than t.
func (b *connBudget) lessValuable(s *slot, idle time.Duration, t *slot, tIdle time.Duration) bool {
	if ss, ts := s.conn.subscribed.Load(), t.conn.subscribed.Load(); ss != ts {
		return !ss
	}
	if sa, ta := b.addrs[s.addr].conns, b.addrs[t.addr].conns; sa != ta {
		return sa > ta
	}
	return idle > tIdle
}

// opened records that s completed its handshake as c. It reports false if
// s was shed meanwhile (the caller then closes c).
func (b *connBudget) opened(s *slot, c *conn) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if s.gone {
		return false
	}
	b.endHandshakeLocked(s)
	s.conn = c
	b.open[s] = struct{}{}
	return true
}

func (b *connBudget) endHandshakeLocked(s *slot) {
	if s.elem == nil {
		return
	}
	b.handshakes.Remove(s.elem)
	a := b.addrs[s.addr]
	a.handshakes.Remove(s.aelem)
	s.elem, s.aelem = nil, nil
	if a.handshakes.Len() == 0 {
		delete(b.hsAddrs, s.addr)
	}
}

// release uncounts s when its connection ends (if it was not shed).
func (b *connBudget) release(s *slot) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !s.gone {
		b.dropLocked(s)
	}
}

// dropLocked uncounts s.
func (b *connBudget) dropLocked(s *slot) {
	s.gone = true
	b.endHandshakeLocked(s)
	delete(b.open, s)
	b.conns--
	a := b.addrs[s.addr]
	if a.conns--; a.conns == 0 {
		delete(b.addrs, s.addr)
	}
}

// counts reports the connections and handshakes counted now.
func (b *connBudget) counts() (conns, handshakes int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.conns, b.handshakes.Len()
}

// memPool is a relay-wide budget of bytes that connections draw from
// through frameAccounts (channel.Budget). When it is spent, the accounts
// that grew least recently are closed until the request fits; a request
// from the account that grew least recently is refused instead.
type memPool struct {
	limit int64 // 0: no limit
	shed  func()

	// mu protects the fields below and the accounts' fields but close.
	mu   sync.Mutex
	used int64
	lru  list.List // *frameAccount holding bytes, least recently grown first
}

// frameAccount is one connection's share of a memPool.
type frameAccount struct {
	p     *memPool
	close func() // closes the connection; called when it is shed
	held  int64
	elem  *list.Element
	dead  bool // shed: reserve nothing more, release is a no-op
}

func (p *memPool) account(close func()) *frameAccount {
	return &frameAccount{p: p, close: close}
}

// Reserve implements channel.Budget.
func (a *frameAccount) Reserve(n int) bool {
	p := a.p
	p.mu.Lock()
	if a.dead {
		p.mu.Unlock()
		return false
	}
	var victims []*frameAccount
	for p.limit > 0 && p.used+int64(n) > p.limit {
		front := p.lru.Front()
		if front == nil || front.Value == a {
			break
		}
		v := front.Value.(*frameAccount)
		p.used -= v.held
		v.held, v.dead = 0, true
		p.lru.Remove(v.elem)
		v.elem = nil
		victims = append(victims, v)
	}
	ok := p.limit <= 0 || p.used+int64(n) <= p.limit
	if ok {
		a.held += int64(n)
		p.used += int64(n)
		if a.elem != nil {
			p.lru.MoveToBack(a.elem)
		} else if a.held > 0 {
			a.elem = p.lru.PushBack(a)
		}
	}
	p.mu.Unlock()
	for _, v := range victims {
		p.shed()
		v.close()
	}
	return ok
}

// Release implements channel.Budget.
func (a *frameAccount) Release(n int) {
	p := a.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if a.dead {
		return
	}
	a.held -= int64(n)
	p.used -= int64(n)
	if a.held <= 0 && a.elem != nil {
		p.lru.Remove(a.elem)
		a.elem = nil
	}
}

// retire gives back everything a finished connection still holds.
func (a *frameAccount) retire() {
	p := a.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if a.dead {
		return
	}
	p.used -= a.held
	a.held, a.dead = 0, true
	if a.elem != nil {
		p.lru.Remove(a.elem)
		a.elem = nil
	}
}

func (p *memPool) inUse() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.used
}

// byteBudget is a relay-wide count of bytes that callers take without
// waiting: take fails once the limit would be passed.
type byteBudget struct {
	limit int64 // 0: no limit
	used  atomic.Int64
}

func (b *byteBudget) take(n int64) bool {
	if b.used.Add(n) > b.limit && b.limit > 0 {
		b.used.Add(-n)
		return false
	}
	return true
}

func (b *byteBudget) give(n int64) { b.used.Add(-n) }

// diskBudget tracks whether the store has room: full is set by the
// checker from the store's DiskUsage, and between checks by the bytes
// accepted since the last one. The last reserve bytes of room are for
// writes that say they are small (Budgets.DiskReserve).
type diskBudget struct {
	limit, free int64        // Budgets.Disk (0: none) and Budgets.DiskFree
	reserve     int64        // Budgets.DiskReserve
	known       atomic.Bool  // the store is a Sizer and was read at least once
	room        atomic.Int64 // bytes that may still be written before the budget is spent
	used        atomic.Int64 // last Used read, for metrics
}

// update records a reading of the store's disk use.
func (d *diskBudget) update(u DiskUsage) {
	room := int64(1) << 62
	if d.limit > 0 {
		room = d.limit - u.Used
	}
	if u.Free >= 0 {
		room = min(room, u.Free-d.free)
	}
	d.room.Store(room)
	d.used.Store(u.Used)
	d.known.Store(true)
}

// take charges n bytes about to be written and reports whether there was
// room for them: outside the reserve, or within it if small (called only
// then) reports true.
func (d *diskBudget) take(n int64, small func() bool) bool {
	if !d.known.Load() {
		return true
	}
	left := d.room.Add(-n)
	if left >= d.reserve || left >= 0 && small() {
		return true
	}
	d.room.Add(n)
	return false
}

// low reports whether only the reserve is left (or not even that).
func (d *diskBudget) low() bool { return d.known.Load() && d.room.Load() < max(d.reserve, 1) }

// full reports whether the budget is spent.
func (d *diskBudget) full() bool { return d.known.Load() && d.room.Load() <= 0 }
