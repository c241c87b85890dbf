package session

import (
	"encoding"
	"encoding/binary"
	"fmt"
)

var (
	_ encoding.BinaryMarshaler   = (*Session)(nil)
	_ encoding.BinaryUnmarshaler = (*Session)(nil)
	_ encoding.BinaryMarshaler   = (*PrekeySet)(nil)
	_ encoding.BinaryUnmarshaler = (*PrekeySet)(nil)
	_ encoding.BinaryMarshaler   = (*Bundle)(nil)
)

// Session state encoding (docs/protocol.md section 2.8), secret:
//
//	state  = version(1) = 0x01 || flags(1) || local identity(32)
//	         || remote identity(32) || local X25519 form(32)
//	         || remote X25519 form(32) || base key(32) || RK(32)
//	         || DHs private(32) || DHs public(32)
//	         || [DHr(32)] || [CKs(32)] || [CKr(32)] || [HKs(32)] || [HKr(32)]
//	         || NHKs(32) || NHKr(32) || Ns(4) || Nr(4) || PN(4)
//	         || nchains(2) || chain* || npending(2) || pending
//	chain  = HK(32) || nkeys(2) || (N(4) || message key seed(32))*
//
// Integers are big-endian. Each bracketed field is present when its flag is
// set: 0x01 initiator, 0x02 DHr, 0x04 CKs, 0x08 CKr, 0x10 HKs, 0x20 HKr;
// other bits are zero. Chains are oldest first, keys in increasing N, and
// no chain is empty; pending is empty or an initial-message prefix.
//
// The X25519 forms of the identities and the public ratchet key are stored
// so that loading a state does no curve arithmetic; the store is trusted
// for integrity (it holds every key of the session anyway).
const (
	stateVersion = 0x01

	flagInitiator = 0x01
	flagDHr       = 0x02
	flagCKs       = 0x04
	flagCKr       = 0x08
	flagHKs       = 0x10
	flagHKr       = 0x20
	flagsKnown    = 0x3f
)

// MarshalBinary encodes the session state for the client's store. The
// result is secret: it holds the keys that decrypt the session's messages.
func (s *Session) MarshalBinary() ([]byte, error) {
	if !s.ready() {
		return nil, fmt.Errorf("marshal session: %w", errNoSession)
	}
	st := &s.st
	b := make([]byte, 0, 512+st.nSkipped*36+len(st.pending))
	var flags byte
	for _, f := range []struct {
		on  bool
		bit byte
	}{{st.initiator, flagInitiator}, {st.hasDHr, flagDHr}, {st.hasCKs, flagCKs}, {st.hasCKr, flagCKr}, {st.hasHKs, flagHKs}, {st.hasHKr, flagHKr}} {
		if f.on {
			flags |= f.bit
		}
	}
	b = append(b, stateVersion, flags)
	b = append(b, st.local[:]...)
	b = append(b, st.remote[:]...)
	b = append(b, st.uLocal[:]...)
	b = append(b, st.uRemote[:]...)
	b = append(b, st.baseKey[:]...)
	b = append(b, st.rk[:]...)
	b = append(b, st.dhsPriv[:]...)
	b = append(b, st.dhsPub[:]...)
	if st.hasDHr {
		b = append(b, st.dhr[:]...)
	}
	if st.hasCKs {
		b = append(b, st.cks[:]...)
	}
	if st.hasCKr {
		b = append(b, st.ckr[:]...)
	}
	if st.hasHKs {
		b = append(b, st.hks[:]...)
	}
	if st.hasHKr {
		b = append(b, st.hkr[:]...)
	}
	b = append(b, st.nhks[:]...)
	b = append(b, st.nhkr[:]...)
	b = binary.BigEndian.AppendUint32(b, st.ns)
	b = binary.BigEndian.AppendUint32(b, st.nr)
	b = binary.BigEndian.AppendUint32(b, st.pn)
	b = binary.BigEndian.AppendUint16(b, uint16(len(st.skipped)))
	for _, ch := range st.skipped {
		b = append(b, ch.hk[:]...)
		b = binary.BigEndian.AppendUint16(b, uint16(len(ch.keys)))
		for _, k := range ch.keys {
			b = binary.BigEndian.AppendUint32(b, k.n)
			b = append(b, k.seed[:]...)
		}
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(st.pending)))
	return append(b, st.pending...), nil
}

// UnmarshalBinary restores a session encoded by MarshalBinary. It keeps
// s.Rand.
func (s *Session) UnmarshalBinary(data []byte) error {
	st, err := parseState(data)
	if err != nil {
		return fmt.Errorf("unmarshal session: %w", err)
	}
	*s = Session{Rand: s.Rand, st: *st}
	return nil
}

func parseState(data []byte) (*state, error) {
	r := reader{b: data}
	if r.byte() != stateVersion {
		return nil, ErrMalformed
	}
	flags := r.byte()
	if flags&^flagsKnown != 0 {
		return nil, ErrMalformed
	}
	st := new(state)
	st.initiator = flags&flagInitiator != 0
	st.local = PublicIdentity(r.bytes(32))
	st.remote = PublicIdentity(r.bytes(32))
	if !r.bad && (st.local == PublicIdentity{} || st.remote == PublicIdentity{}) {
		return nil, ErrMalformed // the zero Session's state (not a valid identity)
	}
	uLocal, uRemote := r.key(), r.key()
	st.baseKey = r.key()
	st.rk = r.key()
	st.dhsPriv = r.key()
	st.dhsPub = r.key()
	opt := func(bit byte, dst *[keyLen]byte) bool {
		if flags&bit == 0 {
			return false
		}
		*dst = r.key()
		return true
	}
	st.hasDHr = opt(flagDHr, &st.dhr)
	st.hasCKs = opt(flagCKs, &st.cks)
	st.hasCKr = opt(flagCKr, &st.ckr)
	st.hasHKs = opt(flagHKs, &st.hks)
	st.hasHKr = opt(flagHKr, &st.hkr)
	st.nhks = r.key()
	st.nhkr = r.key()
	st.ns = r.uint32()
	st.nr = r.uint32()
	st.pn = r.uint32()
	nchains := int(binary.BigEndian.Uint16(r.bytes(2)))
	if nchains > MaxSkippedChains || nchains*(keyLen+2) > r.left() {
		return nil, ErrMalformed
	}
	for range nchains {
		ch := skippedChain{hk: r.key()}
		nkeys := int(binary.BigEndian.Uint16(r.bytes(2)))
		if nkeys == 0 || st.nSkipped+nkeys > MaxSkippedKeys || nkeys*(4+keyLen) > r.left() {
			return nil, ErrMalformed
		}
		ch.keys = make([]skippedKey, nkeys)
		for i := range ch.keys {
			ch.keys[i].n = r.uint32()
			ch.keys[i].seed = r.key()
			if i > 0 && ch.keys[i].n <= ch.keys[i-1].n {
				return nil, ErrMalformed
			}
		}
		st.nSkipped += nkeys
		st.skipped = append(st.skipped, ch)
	}
	npending := int(binary.BigEndian.Uint16(r.bytes(2)))
	if npending > 0 {
		if !st.initiator || (npending != initialFixedLen && npending != initialFixedLen+4) {
			return nil, ErrMalformed
		}
		st.pending = append([]byte(nil), r.bytes(npending)...)
		if st.pending[0] != msgInitial || st.pending[69]&^flagOneTime != 0 ||
			(st.pending[69] == flagOneTime) != (npending == initialFixedLen+4) {
			return nil, ErrMalformed
		}
	}
	if r.bad || r.left() != 0 {
		return nil, ErrMalformed
	}
	st.setIdentities(st.local, st.remote, &uLocal, &uRemote)
	return st, nil
}
