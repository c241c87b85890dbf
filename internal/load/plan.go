package load

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"github.com/ferry-im/ferry/channel"
)

// Plan is a load run's whole population and traffic, the same in every
// process of the run: user i (0 <= i < Users) has a key pair, a mailbox and
// a delivery token derived from Seed and i; process p of Procs serves the
// users [Lo(p), Lo(p+1)), of which the first Senders send; message m (0 <=
// m < Messages) is sent by the m%G-th of the G senders (in process order)
// to a user chosen from m, never the sender. Every process can therefore
// tell how many messages its users will receive, and wait for all of them.
type Plan struct {
	Seed     [32]byte
	Users    int
	Procs    int
	Senders  int // senders per process (at most its users)
	Messages int
}

// Check reports a plan that cannot run.
func (p Plan) Check() error {
	switch {
	case p.Procs < 1:
		return fmt.Errorf("plan: %d processes", p.Procs)
	case p.Users < 2*p.Procs:
		return fmt.Errorf("plan: %d users for %d processes; want at least 2 per process", p.Users, p.Procs)
	case p.Messages < 0:
		return fmt.Errorf("plan: %d messages", p.Messages)
	case p.Messages > 0 && p.Senders < 1:
		return fmt.Errorf("plan: messages but no senders")
	}
	return nil
}

// Lo is the first user of process proc (Lo(Procs) is Users).
func (p Plan) Lo(proc int) int { return proc * p.Users / p.Procs }

// senders is the number of senders of process proc.
func (p Plan) senders(proc int) int { return min(p.Senders, p.Lo(proc+1)-p.Lo(proc)) }

// totalSenders is G, the senders of all processes.
func (p Plan) totalSenders() int {
	g := 0
	for proc := range p.Procs {
		g += p.senders(proc)
	}
	return g
}

// sender returns the user who sends message m, given G.
func (p Plan) sender(m, g int) int {
	k := m % g
	for proc := range p.Procs {
		if n := p.senders(proc); k < n {
			return p.Lo(proc) + k
		} else {
			k -= n
		}
	}
	panic("load: sender out of range")
}

// recipient returns the user message m goes to, sent by from.
func (p Plan) recipient(m, from int) int {
	h := sha256.Sum256(binary.BigEndian.AppendUint64(append(p.Seed[:0:0], p.Seed[:]...), uint64(m)))
	to := int(binary.BigEndian.Uint64(h[:8]) % uint64(p.Users))
	if to == from {
		to = (to + 1) % p.Users
	}
	return to
}

// Key returns user i's key pair.
func (p Plan) Key(i int) channel.KeyPair {
	k, err := channel.NewKeyPair(p.derive("key", i))
	if err != nil {
		panic(err) // any 32 bytes are an X25519 private key
	}
	return k
}

// Token returns user i's delivery token.
func (p Plan) Token(i int) [32]byte { return p.derive("token", i) }

func (p Plan) derive(what string, i int) [32]byte {
	b := append(p.Seed[:0:0], p.Seed[:]...)
	b = append(b, what...)
	return sha256.Sum256(binary.BigEndian.AppendUint64(b, uint64(i)))
}

// messageID is the id of message m: unique in the run.
func messageID(seed [32]byte, m int) [16]byte {
	var id [16]byte
	copy(id[:8], seed[:8])
	binary.BigEndian.PutUint64(id[8:], uint64(m))
	return id
}

// work lists what process proc sends (message numbers, by its sender) and
// how many messages its users will receive.
func (p Plan) work(proc int) (sends map[int][]int, expect int) {
	sends = map[int][]int{}
	if p.Messages == 0 {
		return sends, 0
	}
	g := p.totalSenders()
	lo, hi := p.Lo(proc), p.Lo(proc+1)
	for m := range p.Messages {
		from := p.sender(m, g)
		if from >= lo && from < hi {
			sends[from] = append(sends[from], m)
		}
		if to := p.recipient(m, from); to >= lo && to < hi {
			expect++
		}
	}
	return sends, expect
}
