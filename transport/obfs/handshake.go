package obfs

import (
	"bytes"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// The handshake (docs/transports.md section 4.3):
//
//	client hello = prefix (0 or 6..16 printable bytes, the link's shape)
//	               || X' (32, representative of the client's ephemeral key)
//	               || P_C (padding) || M_C (16) || MAC_C (16)
//	               total length uniform in [minHello, maxHello]
//	server hello = Y' (32) || AUTH (32) || P_S (padding) || M_S (16)
//	               total length uniform in [minHello, maxHello]
//
//	M_C   = HMAC-SHA256(B, "ferry-obfs-1 client mark" || X')[:16]
//	MAC_C = HMAC-SHA256(B, "ferry-obfs-1 client mac" || prefix || X' || P_C || M_C || E)[:16]
//	M_S   = HMAC-SHA256(B, "ferry-obfs-1 server mark" || Y' || AUTH)[:16]
//	E     = uint64 big-endian of the Unix time in hours; the server accepts E-1, E, E+1
//
//	s1 = X25519(x, Y) = X25519(y, X); s2 = X25519(x, B) = X25519(b, X)
//	T  = SHA-256(B || client hello || Y')
//	OKM = HKDF-SHA256(ikm = s1 || s2, salt = "ferry-obfs-1", info = "ferry-obfs-1 keys" || T, 120 bytes)
//	    = AUTH (32) || client-to-server keys (44) || server-to-client keys (44)
//	keys = AES-128-GCM key (16) || nonce base (12) || length-mask AES-128 key (16)
const (
	minHello  = 128  // shortest client or server hello
	maxHello  = 1200 // longest: fits one TCP segment on any common path
	markLen   = 16
	macLen    = 16
	authLen   = 32
	keyLen    = 16
	ivLen     = 12
	dirLen    = keyLen + ivLen + keyLen
	okmLen    = authLen + 2*dirLen
	protoSalt = "ferry-obfs-1"
)

// Labels of the handshake's MACs.
var (
	labelClientMark = []byte("ferry-obfs-1 client mark")
	labelClientMAC  = []byte("ferry-obfs-1 client mac")
	labelServerMark = []byte("ferry-obfs-1 server mark")
	labelKeys       = []byte("ferry-obfs-1 keys")
)

// errHandshake is the cause of every handshake that fails authentication.
var errHandshake = errors.New("obfs handshake failed")

func mac16(key []byte, parts ...[]byte) []byte {
	m := hmac.New(sha256.New, key)
	for _, p := range parts {
		m.Write(p)
	}
	return m.Sum(nil)[:16]
}

func epochBytes(t time.Time, delta int64) []byte {
	var e [8]byte
	binary.BigEndian.PutUint64(e[:], uint64(t.Unix()/3600+delta))
	return e[:]
}

// randIntn returns a uniform integer in [0, n) read from r.
func randIntn(r io.Reader, n int) (int, error) {
	var b [8]byte
	limit := ^uint64(0) - ^uint64(0)%uint64(n)
	for {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, fmt.Errorf("read randomness: %w", err)
		}
		if v := binary.LittleEndian.Uint64(b[:]); v < limit {
			return int(v % uint64(n)), nil
		}
	}
}

// helloLen draws a hello length uniform in [minHello, maxHello].
func helloLen(r io.Reader) (int, error) {
	n, err := randIntn(r, maxHello-minHello+1)
	return minHello + n, err
}

// clientHello is the client's first packet and its secrets.
type clientHello struct {
	kp   *keyPair
	raw  []byte
	keys *sessionKeys // once the server's first 64 bytes are checked
}

// newClientHello builds a client hello for the relay key pub in shape sh,
// drawing until the packet falls in an exemption of the detector (the
// first draw almost always does).
func newClientHello(r io.Reader, pub []byte, sh shape, now time.Time) (*clientHello, error) {
	kp, err := newKeyPair(r)
	if err != nil {
		return nil, err
	}
	for range 64 {
		raw, err := buildClientHello(r, pub, sh, now, kp)
		if err != nil {
			return nil, err
		}
		if fetExempt(raw) {
			return &clientHello{kp: kp, raw: raw}, nil
		}
	}
	return nil, errors.New("build client hello: no exempt packet in 64 draws")
}

func buildClientHello(r io.Reader, pub []byte, sh shape, now time.Time, kp *keyPair) ([]byte, error) {
	total, err := helloLen(r)
	if err != nil {
		return nil, err
	}
	n := sh.prefixLen()
	raw := make([]byte, total)
	for i := range n {
		c, err := randIntn(r, 0x7f-0x20)
		if err != nil {
			return nil, err
		}
		raw[i] = byte(0x20 + c)
	}
	copy(raw[n:], kp.repr[:])
	pad := raw[n+reprLen : total-markLen-macLen]
	if err := fillPadding(r, pad, sh.kind); err != nil {
		return nil, err
	}
	mark := mac16(pub, labelClientMark, kp.repr[:])
	copy(raw[total-markLen-macLen:], mark)
	copy(raw[total-macLen:], mac16(pub, labelClientMAC, raw[:total-macLen], epochBytes(now, 0)))
	return raw, nil
}

// fillPadding fills pad with random bytes: uniform for the prefix shape;
// the AND of two random bytes (2 set bits per byte on average) for the
// low-popcount shape, their OR (6) for the high one.
func fillPadding(r io.Reader, pad []byte, kind byte) error {
	if _, err := io.ReadFull(r, pad); err != nil {
		return fmt.Errorf("read padding: %w", err)
	}
	if kind == 'p' {
		return nil
	}
	other := make([]byte, len(pad))
	if _, err := io.ReadFull(r, other); err != nil {
		return fmt.Errorf("read padding: %w", err)
	}
	for i := range pad {
		if kind == 'l' {
			pad[i] &= other[i]
		} else {
			pad[i] |= other[i]
		}
	}
	return nil
}

// candidatePrefixes are the prefix lengths a server tries, so that it
// accepts every shape whatever its link says.
var candidatePrefixes = [...]int{0, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}

// helloStatus is what a server makes of the bytes read so far.
type helloStatus int

const (
	helloMore helloStatus = iota // no decision yet: read on
	helloOK                      // an authentic client hello, exactly
	helloBad                     // not one, whatever follows
)

// parseClientHello looks for an authentic client hello for the relay key
// pub in buf, the bytes received so far. On helloOK it returns the
// client's representative and mark (the replay filter's key).
func parseClientHello(buf, pub []byte, now time.Time) (st helloStatus, repr [reprLen]byte, mark []byte) {
	for _, n := range candidatePrefixes {
		if len(buf) < n+reprLen+markLen+macLen {
			break
		}
		m := mac16(pub, labelClientMark, buf[n:n+reprLen])
		i := bytes.Index(buf[n+reprLen:], m)
		if i < 0 {
			continue
		}
		end := n + reprLen + i + markLen
		if len(buf) < end+macLen {
			return helloMore, repr, nil
		}
		if len(buf) > end+macLen || !clientMACOK(buf[:end], buf[end:end+macLen], pub, now) {
			return helloBad, repr, nil
		}
		copy(repr[:], buf[n:n+reprLen])
		return helloOK, repr, m
	}
	if len(buf) >= maxHello {
		return helloBad, repr, nil
	}
	return helloMore, repr, nil
}

func clientMACOK(body, got, pub []byte, now time.Time) bool {
	ok := 0
	for d := int64(-1); d <= 1; d++ {
		ok |= subtle.ConstantTimeCompare(got, mac16(pub, labelClientMAC, body, epochBytes(now, d)))
	}
	return ok == 1
}

// sessionKeys are the outputs of the handshake's key derivation.
type sessionKeys struct {
	auth     []byte
	c2s, s2c []byte // dirLen each
}

func deriveKeys(s1, s2, pub, hello, serverRepr []byte) (*sessionKeys, error) {
	th := sha256.New()
	th.Write(pub)
	th.Write(hello)
	th.Write(serverRepr)
	info := append(append([]byte(nil), labelKeys...), th.Sum(nil)...)
	okm, err := hkdf.Key(sha256.New, append(append([]byte(nil), s1...), s2...), []byte(protoSalt), string(info), okmLen)
	if err != nil {
		return nil, fmt.Errorf("derive keys: %w", err)
	}
	return &sessionKeys{auth: okm[:authLen], c2s: okm[authLen : authLen+dirLen], s2c: okm[authLen+dirLen:]}, nil
}

// serverHandshake answers an authentic client hello: it returns the server
// hello to send and the session keys.
func serverHandshake(r io.Reader, priv *keyPair, hello []byte, clientRepr *[reprLen]byte) (reply []byte, keys *sessionKeys, err error) {
	x := decodeRepr(clientRepr)
	eph, err := newKeyPair(r)
	if err != nil {
		return nil, nil, err
	}
	s1, err := x25519(eph.priv, x[:])
	if err != nil {
		return nil, nil, errHandshake
	}
	s2, err := x25519(priv.priv, x[:])
	if err != nil {
		return nil, nil, errHandshake
	}
	keys, err = deriveKeys(s1, s2, priv.pub[:], hello, eph.repr[:])
	if err != nil {
		return nil, nil, err
	}
	total, err := helloLen(r)
	if err != nil {
		return nil, nil, err
	}
	reply = make([]byte, total)
	copy(reply, eph.repr[:])
	copy(reply[reprLen:], keys.auth)
	if _, err := io.ReadFull(r, reply[reprLen+authLen:total-markLen]); err != nil {
		return nil, nil, fmt.Errorf("read padding: %w", err)
	}
	copy(reply[total-markLen:], mac16(priv.pub[:], labelServerMark, reply[:reprLen+authLen]))
	return reply, keys, nil
}

// clientFinish reads the server hello out of buf, the bytes received so
// far: helloMore until it is complete; on helloOK the session keys and the
// number of bytes the hello took (the rest are frames).
func (h *clientHello) finish(buf, pub []byte) (helloStatus, *sessionKeys, int, error) {
	if len(buf) < reprLen+authLen+markLen {
		return helloMore, nil, 0, nil
	}
	if h.keys == nil {
		keys, err := h.checkAuth(buf, pub)
		if err != nil {
			return helloBad, nil, 0, err
		}
		h.keys = keys
	}
	m := mac16(pub, labelServerMark, buf[:reprLen+authLen])
	i := bytes.Index(buf[reprLen+authLen:min(len(buf), maxHello)], m)
	if i < 0 {
		if len(buf) >= maxHello {
			return helloBad, nil, 0, errHandshake
		}
		return helloMore, nil, 0, nil
	}
	return helloOK, h.keys, reprLen + authLen + i + markLen, nil
}

// checkAuth derives the session keys from the server's representative and
// checks its AUTH.
func (h *clientHello) checkAuth(buf, pub []byte) (*sessionKeys, error) {
	var yr [reprLen]byte
	copy(yr[:], buf[:reprLen])
	y := decodeRepr(&yr)
	s1, err := x25519(h.kp.priv, y[:])
	if err != nil {
		return nil, errHandshake
	}
	s2, err := x25519(h.kp.priv, pub)
	if err != nil {
		return nil, fmt.Errorf("relay key: %w", err)
	}
	keys, err := deriveKeys(s1, s2, pub, h.raw, yr[:])
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare(keys.auth, buf[reprLen:reprLen+authLen]) != 1 {
		return nil, errHandshake
	}
	return keys, nil
}
