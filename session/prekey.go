package session

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/mlkem"
	"encoding/binary"
	"fmt"
	"io"
)

// Prekey records (docs/protocol.md section 2.3). A record is one public
// prekey with its identity signature; a bundle is records concatenated
// behind the identity, so a relay can store records as opaque blobs and
// assemble bundles without understanding them.
//
//	record    = type(1) || id(4, big-endian) || public key || signature(64)
//	signature = Ed25519(identity, "Ferry_Prekey_v1" || type || id || public key)
//
// The signature binds the key type (signed, one-time or last-resort) and
// id, so a relay can neither swap keys nor present one kind as another.
const (
	RecordSigned        = 0x01 // signed X25519 prekey; public key 32 bytes
	RecordOneTime       = 0x02 // one-time X25519 prekey; public key 32 bytes
	RecordKEM           = 0x03 // one-time ML-KEM-768 prekey; public key 1184 bytes
	RecordKEMLastResort = 0x04 // last-resort ML-KEM-768 prekey; public key 1184 bytes

	sigLen       = ed25519.SignatureSize
	kemPublicLen = mlkem.EncapsulationKeySize768
	kemCTLen     = mlkem.CiphertextSize768
	kemSeedLen   = mlkem.SeedSize

	// X25519RecordLen and KEMRecordLen are the lengths of the records.
	X25519RecordLen = 1 + 4 + keyLen + sigLen
	KEMRecordLen    = 1 + 4 + kemPublicLen + sigLen
)

// Bundle layout (section 2.4):
//
//	bundle = version(1) = 0x01 || identity(32) || signed record
//	         || [one-time record] || KEM record (one-time or last-resort)
const bundleVersion = 0x01

// prekeySigMessage returns the message a prekey signature covers.
func prekeySigMessage(typ byte, id uint32, pub []byte) []byte {
	m := make([]byte, 0, len(labelPrekeySig)+1+4+len(pub))
	m = append(m, labelPrekeySig...)
	m = append(m, typ)
	m = binary.BigEndian.AppendUint32(m, id)
	return append(m, pub...)
}

// A Prekey is a public X25519 prekey with its signature.
type Prekey struct {
	ID        uint32
	Public    [keyLen]byte
	Signature [sigLen]byte
}

// A KEMPrekey is a public ML-KEM-768 prekey with its signature.
type KEMPrekey struct {
	ID         uint32
	LastResort bool
	Public     [kemPublicLen]byte
	Signature  [sigLen]byte
}

// A Bundle is what an initiator fetches to start a session with its owner:
// the owner's identity, signed prekey, an optional one-time prekey and an
// ML-KEM prekey. Initiate verifies every signature in it.
type Bundle struct {
	Identity      PublicIdentity
	SignedPrekey  Prekey
	OneTimePrekey *Prekey // nil if the owner has run out
	KEMPrekey     KEMPrekey
}

// MarshalBinary encodes b (section 2.4).
func (b *Bundle) MarshalBinary() ([]byte, error) {
	n := 1 + 32 + X25519RecordLen + KEMRecordLen
	if b.OneTimePrekey != nil {
		n += X25519RecordLen
	}
	out := make([]byte, 0, n)
	out = append(out, bundleVersion)
	out = append(out, b.Identity[:]...)
	out = b.SignedPrekey.appendRecord(out, RecordSigned)
	if b.OneTimePrekey != nil {
		out = b.OneTimePrekey.appendRecord(out, RecordOneTime)
	}
	return b.KEMPrekey.appendRecord(out), nil
}

func (p *Prekey) appendRecord(b []byte, typ byte) []byte {
	b = append(b, typ)
	b = binary.BigEndian.AppendUint32(b, p.ID)
	b = append(b, p.Public[:]...)
	return append(b, p.Signature[:]...)
}

func (k *KEMPrekey) appendRecord(b []byte) []byte {
	typ := byte(RecordKEM)
	if k.LastResort {
		typ = RecordKEMLastResort
	}
	b = append(b, typ)
	b = binary.BigEndian.AppendUint32(b, k.ID)
	b = append(b, k.Public[:]...)
	return append(b, k.Signature[:]...)
}

// ParseBundle decodes a bundle. It checks the layout, not the signatures:
// Initiate verifies those.
func ParseBundle(data []byte) (*Bundle, error) {
	if len(data) < 1+32 || data[0] != bundleVersion {
		return nil, fmt.Errorf("parse bundle: %w", ErrMalformed)
	}
	b := &Bundle{Identity: PublicIdentity(data[1:33])}
	rest := data[33:]
	var err error
	if rest, err = parseX25519Record(rest, RecordSigned, &b.SignedPrekey); err != nil {
		return nil, err
	}
	if len(rest) > 0 && rest[0] == RecordOneTime {
		b.OneTimePrekey = new(Prekey)
		if rest, err = parseX25519Record(rest, RecordOneTime, b.OneTimePrekey); err != nil {
			return nil, err
		}
	}
	if len(rest) != KEMRecordLen || (rest[0] != RecordKEM && rest[0] != RecordKEMLastResort) {
		return nil, fmt.Errorf("parse bundle: kem prekey: %w", ErrMalformed)
	}
	k := &b.KEMPrekey
	k.LastResort = rest[0] == RecordKEMLastResort
	k.ID = binary.BigEndian.Uint32(rest[1:5])
	copy(k.Public[:], rest[5:5+kemPublicLen])
	copy(k.Signature[:], rest[5+kemPublicLen:])
	return b, nil
}

func parseX25519Record(b []byte, typ byte, p *Prekey) ([]byte, error) {
	if len(b) < X25519RecordLen || b[0] != typ {
		return nil, fmt.Errorf("parse bundle: prekey record type %#x: %w", typ, ErrMalformed)
	}
	p.ID = binary.BigEndian.Uint32(b[1:5])
	copy(p.Public[:], b[5:5+keyLen])
	copy(p.Signature[:], b[5+keyLen:X25519RecordLen])
	return b[X25519RecordLen:], nil
}

// verify checks the identity key and every signature in b, and returns the
// identity's X25519 form. The cheap checks of the key (canonical, not of
// small order) come first; the on-curve test is left to crypto/ed25519,
// which decodes the point before it accepts a signature, so the map to
// X25519 after the signatures skips it. Only when a signature fails does
// verify run the full check, to report an invalid key as such.
func (b *Bundle) verify() ([32]byte, error) {
	var u [32]byte
	if !b.Identity.canonicalLargeOrder() {
		_, err := b.Identity.montgomery()
		if err == nil {
			err = ErrInvalidKey // unreachable: montgomery rejects what canonicalLargeOrder does
		}
		return u, fmt.Errorf("verify bundle: %w", err)
	}
	check := func(typ byte, id uint32, pub, sig []byte) error {
		if !ed25519.Verify(b.Identity[:], prekeySigMessage(typ, id, pub), sig) {
			if _, err := b.Identity.montgomery(); err != nil {
				return fmt.Errorf("verify bundle: %w", err)
			}
			return fmt.Errorf("verify bundle: prekey %d: %w", id, ErrBadSignature)
		}
		return nil
	}
	if err := check(RecordSigned, b.SignedPrekey.ID, b.SignedPrekey.Public[:], b.SignedPrekey.Signature[:]); err != nil {
		return u, err
	}
	if o := b.OneTimePrekey; o != nil {
		if err := check(RecordOneTime, o.ID, o.Public[:], o.Signature[:]); err != nil {
			return u, err
		}
	}
	typ := byte(RecordKEM)
	if b.KEMPrekey.LastResort {
		typ = RecordKEMLastResort
	}
	if err := check(typ, b.KEMPrekey.ID, b.KEMPrekey.Public[:], b.KEMPrekey.Signature[:]); err != nil {
		return u, err
	}
	u, err := b.Identity.montgomeryOnCurve()
	if err != nil {
		return u, fmt.Errorf("verify bundle: %w", err)
	}
	return u, nil
}

// A PrekeySet is the private side of an identity's prekeys: signed
// prekeys (the current one and the one it replaced), one-time X25519 and
// ML-KEM prekeys, and the last-resort ML-KEM prekey. Its owner publishes
// Records to the relay and passes the set to Respond, which deletes the
// one-time prekeys a session used. It is not safe for concurrent use. The
// zero PrekeySet is not usable: make one with GeneratePrekeys or
// UnmarshalBinary.
type PrekeySet struct {
	nextID     uint32
	signed     []x25519Prekey // newest last; at most maxSigned
	oneTime    []x25519Prekey
	kem        []kemPrekey
	lastResort []kemPrekey // newest last; at most maxSigned
}

// maxSigned is how many signed prekeys (and last-resort ML-KEM prekeys) a
// set keeps: the current one and its predecessor, for initial messages
// still in flight after a rotation.
const maxSigned = 2

// Private prekeys keep their raw bytes; the crypto/ecdh and crypto/mlkem
// objects are built on first use, so loading a set does no key arithmetic.
type x25519Prekey struct {
	id   uint32
	priv [keyLen]byte
	pub  [keyLen]byte
	sig  [sigLen]byte
	key  *ecdh.PrivateKey // built from priv on first use
}

type kemPrekey struct {
	id   uint32
	seed [kemSeedLen]byte
	sig  [sigLen]byte
	dk   *mlkem.DecapsulationKey768 // built from seed on first use
}

func (k *x25519Prekey) privateKey() (*ecdh.PrivateKey, error) {
	if k.key == nil {
		key, err := ecdh.X25519().NewPrivateKey(k.priv[:])
		if err != nil {
			return nil, err
		}
		k.key = key
	}
	return k.key, nil
}

func (k *kemPrekey) decapsulationKey() *mlkem.DecapsulationKey768 {
	if k.dk == nil {
		dk, err := mlkem.NewDecapsulationKey768(k.seed[:])
		if err != nil {
			panic("session: ml-kem seed of the wrong length") // seed is a fixed-size array
		}
		k.dk = dk
	}
	return k.dk
}

// GeneratePrekeys creates a prekey set for id with one signed prekey, n
// one-time X25519 prekeys, n one-time ML-KEM prekeys and a last-resort
// ML-KEM prekey, drawing all randomness from rand.
func GeneratePrekeys(rand io.Reader, id *Identity, n int) (*PrekeySet, error) {
	ps := &PrekeySet{nextID: 1}
	if err := ps.RotateSigned(rand, id); err != nil {
		return nil, err
	}
	if err := ps.RotateLastResort(rand, id); err != nil {
		return nil, err
	}
	if err := ps.AddOneTime(rand, id, n); err != nil {
		return nil, err
	}
	return ps, nil
}

func (ps *PrekeySet) takeID() uint32 {
	id := ps.nextID
	ps.nextID++
	return id
}

func (ps *PrekeySet) newX25519(rand io.Reader, id *Identity, typ byte) (x25519Prekey, error) {
	priv, err := generateX25519(rand)
	if err != nil {
		return x25519Prekey{}, fmt.Errorf("generate prekey: %w", err)
	}
	k := x25519Prekey{id: ps.takeID(), key: priv}
	copy(k.priv[:], priv.Bytes())
	copy(k.pub[:], priv.PublicKey().Bytes())
	copy(k.sig[:], id.Sign(prekeySigMessage(typ, k.id, k.pub[:])))
	return k, nil
}

func (ps *PrekeySet) newKEM(rand io.Reader, id *Identity, typ byte) (kemPrekey, error) {
	var k kemPrekey
	if _, err := io.ReadFull(rand, k.seed[:]); err != nil {
		return k, fmt.Errorf("generate kem prekey: %w", err)
	}
	dk, err := mlkem.NewDecapsulationKey768(k.seed[:])
	if err != nil {
		return k, fmt.Errorf("generate kem prekey: %v", err)
	}
	k.dk = dk
	k.id = ps.takeID()
	copy(k.sig[:], id.Sign(prekeySigMessage(typ, k.id, dk.EncapsulationKey().Bytes())))
	return k, nil
}

// RotateSigned makes a new signed prekey current, keeping the previous one
// (but no older) so initial messages already in flight still work.
func (ps *PrekeySet) RotateSigned(rand io.Reader, id *Identity) error {
	k, err := ps.newX25519(rand, id, RecordSigned)
	if err != nil {
		return err
	}
	ps.signed = append(ps.signed, k)
	if len(ps.signed) > maxSigned {
		ps.signed = ps.signed[len(ps.signed)-maxSigned:]
	}
	return nil
}

// RotateLastResort makes a new last-resort ML-KEM prekey current, keeping
// the previous one (but no older). Rotating it bounds how many sessions a
// compromise of one last-resort key exposes to a quantum adversary.
func (ps *PrekeySet) RotateLastResort(rand io.Reader, id *Identity) error {
	k, err := ps.newKEM(rand, id, RecordKEMLastResort)
	if err != nil {
		return err
	}
	ps.lastResort = append(ps.lastResort, k)
	if len(ps.lastResort) > maxSigned {
		ps.lastResort = ps.lastResort[len(ps.lastResort)-maxSigned:]
	}
	return nil
}

// AddOneTime adds n one-time X25519 prekeys and n one-time ML-KEM prekeys.
func (ps *PrekeySet) AddOneTime(rand io.Reader, id *Identity, n int) error {
	for range n {
		k, err := ps.newX25519(rand, id, RecordOneTime)
		if err != nil {
			return err
		}
		ps.oneTime = append(ps.oneTime, k)
	}
	for range n {
		k, err := ps.newKEM(rand, id, RecordKEM)
		if err != nil {
			return err
		}
		ps.kem = append(ps.kem, k)
	}
	return nil
}

// Records are the public prekey records of a set, for upload to the relay.
type Records struct {
	Signed     []byte   // the current signed prekey record
	OneTime    [][]byte // one-time X25519 prekey records
	KEM        [][]byte // one-time ML-KEM prekey records
	LastResort []byte   // the last-resort ML-KEM prekey record
}

// Records returns the public records of the set (section 2.3).
func (ps *PrekeySet) Records() Records {
	var r Records
	r.Signed = ps.signed[len(ps.signed)-1].record(RecordSigned)
	for i := range ps.oneTime {
		r.OneTime = append(r.OneTime, ps.oneTime[i].record(RecordOneTime))
	}
	for i := range ps.kem {
		r.KEM = append(r.KEM, ps.kem[i].record(RecordKEM))
	}
	r.LastResort = ps.lastResort[len(ps.lastResort)-1].record(RecordKEMLastResort)
	return r
}

func (k *x25519Prekey) public() Prekey {
	p := Prekey{ID: k.id, Signature: k.sig}
	p.Public = k.pub
	return p
}

func (k *x25519Prekey) record(typ byte) []byte {
	p := k.public()
	return p.appendRecord(make([]byte, 0, X25519RecordLen), typ)
}

func (k *kemPrekey) public(lastResort bool) KEMPrekey {
	p := KEMPrekey{ID: k.id, LastResort: lastResort, Signature: k.sig}
	copy(p.Public[:], k.decapsulationKey().EncapsulationKey().Bytes())
	return p
}

func (k *kemPrekey) record(typ byte) []byte {
	p := k.public(typ == RecordKEMLastResort)
	return p.appendRecord(make([]byte, 0, KEMRecordLen))
}

// Bundle returns a bundle for identity as the relay would assemble it: the
// current signed prekey, the first one-time X25519 prekey (if oneTime and
// any is left) and the first one-time ML-KEM prekey (if oneTime and any is
// left, else the last-resort one). It does not remove anything from the set.
func (ps *PrekeySet) Bundle(identity PublicIdentity, oneTime bool) *Bundle {
	b := &Bundle{Identity: identity, SignedPrekey: ps.signed[len(ps.signed)-1].public()}
	if oneTime && len(ps.oneTime) > 0 {
		p := ps.oneTime[0].public()
		b.OneTimePrekey = &p
	}
	if oneTime && len(ps.kem) > 0 {
		b.KEMPrekey = ps.kem[0].public(false)
	} else {
		b.KEMPrekey = ps.lastResort[len(ps.lastResort)-1].public(true)
	}
	return b
}

// OneTimeCount returns how many one-time X25519 and ML-KEM prekeys are left,
// so the owner knows when to add more.
func (ps *PrekeySet) OneTimeCount() (x25519, kem int) { return len(ps.oneTime), len(ps.kem) }

func (ps *PrekeySet) findSigned(id uint32) *x25519Prekey {
	if i := findX25519(ps.signed, id); i >= 0 {
		return &ps.signed[i]
	}
	return nil
}

func findX25519(keys []x25519Prekey, id uint32) int {
	for i := range keys {
		if keys[i].id == id {
			return i
		}
	}
	return -1
}

func findKEM(keys []kemPrekey, id uint32) int {
	for i := range keys {
		if keys[i].id == id {
			return i
		}
	}
	return -1
}

// PrekeySet encoding (section 2.8), secret:
//
//	set     = version(1) = 0x01 || next id(4) || nsigned(1) || signed*
//	          || nonetime(4) || onetime* || nkem(4) || kem*
//	          || nlastresort(1) || last-resort kem*
//	signed, onetime = id(4) || private key(32) || public key(32) || signature(64)
//	kem     = id(4) || seed(64) || signature(64)
const (
	prekeySetVersion = 0x01
	x25519EntryLen   = 4 + 2*keyLen + sigLen
	kemEntryLen      = 4 + kemSeedLen + sigLen
)

// MarshalBinary encodes the private prekey set for the owner's store.
func (ps *PrekeySet) MarshalBinary() ([]byte, error) {
	b := []byte{prekeySetVersion}
	b = binary.BigEndian.AppendUint32(b, ps.nextID)
	b = append(b, byte(len(ps.signed)))
	for i := range ps.signed {
		b = ps.signed[i].appendEntry(b)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(ps.oneTime)))
	for i := range ps.oneTime {
		b = ps.oneTime[i].appendEntry(b)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(ps.kem)))
	for i := range ps.kem {
		b = ps.kem[i].appendEntry(b)
	}
	b = append(b, byte(len(ps.lastResort)))
	for i := range ps.lastResort {
		b = ps.lastResort[i].appendEntry(b)
	}
	return b, nil
}

func (k *x25519Prekey) appendEntry(b []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, k.id)
	b = append(b, k.priv[:]...)
	b = append(b, k.pub[:]...)
	return append(b, k.sig[:]...)
}

func (k *kemPrekey) appendEntry(b []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, k.id)
	b = append(b, k.seed[:]...)
	return append(b, k.sig[:]...)
}

// UnmarshalBinary decodes a set encoded by MarshalBinary.
func (ps *PrekeySet) UnmarshalBinary(data []byte) error {
	errBad := fmt.Errorf("unmarshal prekey set: %w", ErrMalformed)
	r := reader{b: data}
	if r.byte() != prekeySetVersion {
		return errBad
	}
	var n PrekeySet
	n.nextID = r.uint32()
	ns := int(r.byte())
	if ns < 1 || ns > maxSigned {
		return errBad
	}
	readX := func(count int) ([]x25519Prekey, bool) {
		if count > r.left()/x25519EntryLen {
			return nil, false
		}
		keys := make([]x25519Prekey, count)
		for i := range keys {
			keys[i].id = r.uint32()
			keys[i].priv = r.key()
			keys[i].pub = r.key()
			copy(keys[i].sig[:], r.bytes(sigLen))
		}
		return keys, !r.bad
	}
	readK := func(count int) ([]kemPrekey, bool) {
		if count > r.left()/kemEntryLen {
			return nil, false
		}
		keys := make([]kemPrekey, count)
		for i := range keys {
			keys[i].id = r.uint32()
			copy(keys[i].seed[:], r.bytes(kemSeedLen))
			copy(keys[i].sig[:], r.bytes(sigLen))
		}
		return keys, !r.bad
	}
	var ok bool
	if n.signed, ok = readX(ns); !ok {
		return errBad
	}
	if n.oneTime, ok = readX(int(r.uint32())); !ok {
		return errBad
	}
	if n.kem, ok = readK(int(r.uint32())); !ok {
		return errBad
	}
	nl := int(r.byte())
	if nl < 1 || nl > maxSigned {
		return errBad
	}
	if n.lastResort, ok = readK(nl); !ok || r.left() != 0 || r.bad {
		return errBad
	}
	*ps = n
	return nil
}

// reader reads big-endian fields; after a short read, bad is set and every
// further read returns zeros.
type reader struct {
	b   []byte
	bad bool
}

func (r *reader) left() int { return len(r.b) }

func (r *reader) bytes(n int) []byte {
	if r.bad || len(r.b) < n {
		r.bad = true
		r.b = nil
		return make([]byte, n)
	}
	p := r.b[:n]
	r.b = r.b[n:]
	return p
}

func (r *reader) byte() byte        { return r.bytes(1)[0] }
func (r *reader) uint32() uint32    { return binary.BigEndian.Uint32(r.bytes(4)) }
func (r *reader) key() [keyLen]byte { return [keyLen]byte(r.bytes(keyLen)) }
