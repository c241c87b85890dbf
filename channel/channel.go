// Package channel is the secure channel between a Ferry client and a relay:
// a Noise IK handshake (Noise_IK_25519_ChaChaPoly_BLAKE2s, via
// github.com/flynn/noise) over any net.Conn a transport gives, then
// encrypted records that carry wire frames, multiplexed so that a large
// frame never holds up a small one.
//
// The client knows the relay's static key from its link, so the relay is
// authenticated by the first handshake message alone, independently of any
// TLS certificate; the client's static key (its device key) is authenticated
// to the relay in the same message. PeerKey gives each side the other's
// authenticated key, and MailboxID turns a device key into its mailbox.
//
// It is not a transport (it adds no disguise: what a censor sees depends on
// the transport underneath) and it does not interpret frames beyond their
// envelope (package wire does). docs/protocol.md section 5 specifies every
// byte.
package channel

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flynn/noise"

	"github.com/ferry-im/ferry/wire"
)

// Handshake and record layout (docs/protocol.md section 5.3).
//
// Every Noise message, handshake or transport, is sent as
//
//	length u16 big-endian | noise message (length bytes, at most 65535)
//
// Handshake (IK, prologue = "ferry channel" 0x00 | ProtocolVersion u16):
//
//	-> e, es, s, ss   client: 32 + 48 + 16 + payload bytes (payload empty in v1)
//	<- e, ee, se      relay:  32 + 16 + payload bytes (payload empty in v1)
//	-> record         client: one empty record (16 bytes), which the relay
//	                  must decrypt before Server returns
//
// A record's plaintext is empty (a no-op, skipped) or
//
//	stream u32 big-endian | flags u8 | data (at most MaxRecordData bytes)
//
// The data of the records of one stream, in order, is one wire frame
// envelope (type u8 | length u32 | payload); the first record of a stream
// holds at least the 5-byte envelope header.
const (
	lenPrefix        = 2
	MaxNoiseMessage  = 65535    // largest Noise message
	tagLen           = 16       // ChaChaPoly tag
	recordHeaderLen  = 5        // stream u32 | flags u8
	MaxRecordData    = 16 << 10 // frame bytes per record
	flagFin          = 0x01     // last record of the stream's frame
	flagAbort        = 0x02     // the sender abandoned the frame; drop it
	knownFlags       = flagFin | flagAbort
	maxPartial       = 4        // frames in transit at once per direction
	maxHandshakeMsg1 = 96 + 256 // IK message 1 with up to 256 payload bytes
	maxHandshakeMsg2 = 48 + 256 // IK message 2 with up to 256 payload bytes
	writeBatch       = 32 << 10 // plaintext bytes gathered into one Write
	handOffAfter     = 64 << 10 // bytes a writer writes for others before handing off
	writeBufLen      = writeBatch + MaxRecordData + 8*(lenPrefix+recordHeaderLen+tagLen)
	readBufLen       = MaxNoiseMessage
	smallReadLen     = 1024 // bytes read into the Conn itself while none are buffered
	minFrameBuf      = 512  // smallest reassembly buffer
)

// Prologue is bound into the handshake hash: both sides must agree on the
// protocol name and wire version or the handshake fails.
var Prologue = []byte{'f', 'e', 'r', 'r', 'y', ' ', 'c', 'h', 'a', 'n', 'n', 'e', 'l', 0,
	byte(wire.ProtocolVersion >> 8), byte(wire.ProtocolVersion)}

// cipherSuite is Noise's 25519 / ChaChaPoly / BLAKE2s suite for one
// handshake with the static private key static (X25519 from dh.go,
// ChaChaPoly from cipher.go).
func cipherSuite(static [32]byte) noise.CipherSuite {
	return noise.NewCipherSuite(&x25519{static: static}, chachaPolyFunc{}, noise.HashBLAKE2s)
}

// ProtocolName is the full Noise protocol name of the handshake.
const ProtocolName = "Noise_IK_25519_ChaChaPoly_BLAKE2s"

// KeyPair is an X25519 static key pair.
type KeyPair struct {
	Private, Public [32]byte
}

// GenerateKeyPair makes a key pair from 32 bytes of rand (crypto/rand if nil).
func GenerateKeyPair(r io.Reader) (KeyPair, error) {
	if r == nil {
		r = rand.Reader
	}
	var priv [32]byte
	if _, err := io.ReadFull(r, priv[:]); err != nil {
		return KeyPair{}, fmt.Errorf("generate key pair: %w", err)
	}
	return NewKeyPair(priv)
}

// NewKeyPair returns the key pair of a stored private key.
func NewKeyPair(private [32]byte) (KeyPair, error) {
	k, err := ecdh.X25519().NewPrivateKey(private[:])
	if err != nil {
		return KeyPair{}, fmt.Errorf("new key pair: %w", err)
	}
	kp := KeyPair{Private: private}
	copy(kp.Public[:], k.PublicKey().Bytes())
	return kp, nil
}

// MailboxID returns the mailbox of a device key; it is wire.MailboxID.
func MailboxID(devicePublic [32]byte) [16]byte { return wire.MailboxID(devicePublic) }

// Errors a caller may branch on.
var (
	// ErrHandshake wraps every failure of the handshake's cryptography: a
	// wrong relay key, a peer speaking another protocol, garbage.
	ErrHandshake = errors.New("channel handshake failed")
	// ErrProtocol wraps a peer's violation of the record layer after the
	// handshake (bad record, bad stream, oversized frame).
	ErrProtocol = errors.New("channel protocol violation")
	// ErrBudget is the final error of a Recv whose frame could not grow
	// because Config.Budget refused the memory.
	ErrBudget = errors.New("channel memory budget exhausted")
)

// Budget is charged for the memory a receiver holds for what is in
// transit: the buffers in which it reassembles frames that span several
// records, and the pooled read buffer (64 KiB) it holds while a record
// that does not fit its small array is being read. A channel reserves
// before it grows a frame buffer (by at most the buffer's size so far, so
// a buffer never holds more than twice the bytes received) and releases
// when the frame is complete (its payload then belongs to the caller of
// Recv), aborted, or the channel fails; it reserves a read buffer when it
// takes one and releases it when it gives it back. Reserve and Release are
// called only by the goroutine in Recv, but a Budget shared by many
// channels must be safe for concurrent use.
type Budget interface {
	// Reserve asks for n more bytes. false refuses them: Recv then fails
	// with ErrBudget and closes the channel.
	Reserve(n int) bool
	// Release gives back n bytes reserved earlier.
	Release(n int)
}

// Config configures a channel end. The zero value works.
type Config struct {
	// Rand is the source of the handshake's ephemeral keys. If nil,
	// crypto/rand is used.
	Rand io.Reader
	// Logger receives debug events (never keys, frame contents or peer
	// addresses). If nil, nothing is logged.
	Logger *slog.Logger
	// Budget, if not nil, is charged for the reassembly buffers of
	// frames in transit on the channels made with this Config.
	Budget Budget
}

func (c *Config) rand() io.Reader {
	if c == nil || c.Rand == nil {
		return rand.Reader
	}
	return c.Rand
}

func (c *Config) budget() Budget {
	if c == nil {
		return nil
	}
	return c.Budget
}

func (c *Config) logger() *slog.Logger {
	if c == nil || c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}

// Client runs the client side of the handshake on conn with the zero Config.
func Client(ctx context.Context, conn net.Conn, static KeyPair, relayKey [32]byte) (*Conn, error) {
	return (*Config)(nil).Client(ctx, conn, static, relayKey)
}

// Server runs the relay side of the handshake on conn with the zero Config.
func Server(ctx context.Context, conn net.Conn, static KeyPair) (*Conn, error) {
	return (*Config)(nil).Server(ctx, conn, static)
}

// noiseConfig is the one place the channel's Noise configuration is made;
// the vector tests run the published vectors through it.
func noiseConfig(initiator bool, static KeyPair, peer []byte, random io.Reader, prologue []byte) noise.Config {
	return noise.Config{
		CipherSuite:   cipherSuite(static.Private),
		Random:        random,
		Pattern:       noise.HandshakeIK,
		Initiator:     initiator,
		Prologue:      prologue,
		StaticKeypair: noise.DHKey{Private: static.Private[:], Public: static.Public[:]},
		PeerStatic:    peer,
	}
}

// Client runs the client side of the handshake on conn, authenticating the
// relay by relayKey and itself by static. ctx bounds the handshake. On
// failure conn is closed.
func (cfg *Config) Client(ctx context.Context, conn net.Conn, static KeyPair, relayKey [32]byte) (_ *Conn, err error) {
	defer func() {
		if err != nil {
			cfg.logger().Debug("channel handshake failed", "side", "client", "err", err)
			conn.Close()
		}
	}()
	stop := deadlineFromContext(ctx, conn)
	defer stop()
	hs, err := noise.NewHandshakeState(noiseConfig(true, static, relayKey[:], cfg.rand(), Prologue))
	if err != nil {
		return nil, fmt.Errorf("client handshake: %w", err)
	}
	msg1, _, _, err := hs.WriteMessage(make([]byte, lenPrefix, lenPrefix+96), nil)
	if err != nil {
		return nil, fmt.Errorf("client handshake: write message 1: %w", err)
	}
	binary.BigEndian.PutUint16(msg1, uint16(len(msg1)-lenPrefix))
	if _, err := conn.Write(msg1); err != nil {
		return nil, ctxErr(ctx, fmt.Errorf("client handshake: write message 1: %w", err))
	}
	msg2, err := readHandshake(conn, maxHandshakeMsg2)
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		// A relay closes without a word on a message 1 it cannot read.
		return nil, ctxErr(ctx, fmt.Errorf("client handshake: relay closed the connection without answering (wrong relay key, another Ferry version, or a middlebox): %w", err))
	}
	if err != nil {
		return nil, ctxErr(ctx, fmt.Errorf("client handshake: read message 2: %w", err))
	}
	_, enc, dec, err := hs.ReadMessage(nil, msg2)
	if err != nil {
		return nil, fmt.Errorf("client handshake: read message 2: %w: %v", ErrHandshake, err)
	}
	c := newConn(conn, relayKey, enc, dec, cfg.logger())
	c.budget = cfg.budget()
	// The confirmation record proves to the relay that we hold the
	// ephemeral key of message 1 (a replayed message 1 cannot produce it).
	var confirm [lenPrefix + tagLen]byte
	out, err := c.enc.Encrypt(confirm[:lenPrefix], nil, nil)
	if err != nil {
		return nil, fmt.Errorf("client handshake: confirm: %w", err)
	}
	binary.BigEndian.PutUint16(out, uint16(len(out)-lenPrefix))
	if _, err := conn.Write(out); err != nil {
		return nil, ctxErr(ctx, fmt.Errorf("client handshake: confirm: %w", err))
	}
	return c, nil
}

// Server runs the relay side of the handshake on conn with the relay's static
// key. It returns once the client has proved it completed the handshake;
// PeerKey is then the client's authenticated device key. ctx bounds the
// handshake. On any failure, including garbage from the peer, conn is closed
// without a byte written after the failure.
func (cfg *Config) Server(ctx context.Context, conn net.Conn, static KeyPair) (_ *Conn, err error) {
	defer func() {
		if err != nil {
			cfg.logger().Debug("channel handshake failed", "side", "server", "err", err)
			conn.Close()
		}
	}()
	stop := deadlineFromContext(ctx, conn)
	defer stop()
	hs, err := noise.NewHandshakeState(noiseConfig(false, static, nil, cfg.rand(), Prologue))
	if err != nil {
		return nil, fmt.Errorf("server handshake: %w", err)
	}
	msg1, err := readHandshake(conn, maxHandshakeMsg1)
	if err != nil {
		return nil, ctxErr(ctx, fmt.Errorf("server handshake: read message 1: %w", err))
	}
	if _, _, _, err := hs.ReadMessage(nil, msg1); err != nil {
		return nil, fmt.Errorf("server handshake: read message 1: %w: %v", ErrHandshake, err)
	}
	var peer [32]byte
	copy(peer[:], hs.PeerStatic())
	msg2, dec, enc, err := hs.WriteMessage(make([]byte, lenPrefix, lenPrefix+48), nil)
	if err != nil {
		return nil, fmt.Errorf("server handshake: write message 2: %w", err)
	}
	binary.BigEndian.PutUint16(msg2, uint16(len(msg2)-lenPrefix))
	if _, err := conn.Write(msg2); err != nil {
		return nil, ctxErr(ctx, fmt.Errorf("server handshake: write message 2: %w", err))
	}
	c := newConn(conn, peer, enc, dec, cfg.logger())
	c.budget = cfg.budget()
	confirm, err := readHandshake(conn, tagLen)
	if err != nil {
		return nil, ctxErr(ctx, fmt.Errorf("server handshake: read confirmation: %w", err))
	}
	if len(confirm) != tagLen {
		return nil, fmt.Errorf("server handshake: read confirmation: %w: %d bytes", ErrHandshake, len(confirm))
	}
	if _, err := c.dec.Decrypt(confirm[:0], nil, confirm); err != nil {
		return nil, fmt.Errorf("server handshake: read confirmation: %w: %v", ErrHandshake, err)
	}
	return c, nil
}

// readHandshake reads one length-prefixed handshake message of at most max
// bytes.
func readHandshake(conn net.Conn, max int) ([]byte, error) {
	var h [lenPrefix]byte
	if _, err := io.ReadFull(conn, h[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(h[:]))
	if n > max || n == 0 {
		return nil, fmt.Errorf("%w: message of %d bytes", ErrHandshake, n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(conn, b); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return b, nil
}

// longAgo is a deadline in the past, to wake blocked I/O.
var longAgo = time.Unix(1, 0)

// deadlineFromContext makes conn's I/O fail when ctx ends (by moving the
// deadline into the past once ctx is done, so ctx.Err() is already set when
// the I/O fails), and returns a
// function that undoes it (waiting for a concurrent wake-up to finish).
func deadlineFromContext(ctx context.Context, conn net.Conn) func() {
	if ctx.Done() == nil {
		return func() {}
	}
	done := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(done)
		conn.SetDeadline(longAgo)
	})
	return func() {
		if !stop() {
			<-done
		}
		conn.SetDeadline(time.Time{})
	}
}

// ctxErr prefers the context's error when the context has ended, since a
// deadline we set from it is what made the I/O fail.
func ctxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("%w (%v)", cerr, err)
	}
	return err
}

// Conn is an established channel. Send is safe for concurrent use; Recv must
// be called from one goroutine at a time; Close may be called at any time,
// more than once, and unblocks Send and Recv.
type Conn struct {
	conn   net.Conn
	peer   [32]byte
	log    *slog.Logger
	closed atomic.Bool
	once   sync.Once

	// wmu protects the write queue and the fields after it. Whichever Send
	// holds the writer role (writing true) encrypts with enc and writes to
	// conn; the role passes between senders under wmu, so no goroutine
	// exists for an idle channel.
	wmu        sync.Mutex
	queue      []*outFrame // frames not yet fully written, in arrival order
	writing    bool        // a sender holds the writer role
	werr       error       // sticky write error
	nextStream uint32      // last stream id used
	lastLarge  uint32      // stream id of the last multi-record frame served
	enc        *noise.CipherState

	// rwatch is the wake-up registered for Recv's context (recv.go). done
	// is written only by the goroutine in Recv, holding mu, so that
	// goroutine reads it without; fired and stop are written by it or by
	// Close, holding mu.
	rwatch struct {
		mu     sync.Mutex
		done   <-chan struct{} // the watched context's Done channel
		fired  chan struct{}   // closed once the wake-up has run
		stop   func() bool     // unregisters the wake-up; nil once stopped
		closed bool            // Close has run: register nothing more
	}

	// Read side, touched only by the goroutine in Recv.
	dec    *noise.CipherState
	rerr   error           // sticky read error
	hdr    [lenPrefix]byte // length prefix of the record being read
	hdrN   int             // bytes of hdr read so far
	rbuf   *[]byte         // pooled read buffer or &smallBuf, nil when no bytes are buffered
	rs, re int             // unread bytes are (*rbuf)[rs:re]
	// small holds what one Read returns while no bytes were buffered, so
	// that a small record costs one Read, not two (its length, then the
	// rest), without an idle channel holding a pooled buffer. smallBuf is
	// small[:], for rbuf to point to.
	small    [smallReadLen]byte
	smallBuf []byte
	// partial holds the frames in transit, at most maxPartial.
	partial []*inFrame
	budget  Budget // charged for the partial frames' buffers; may be nil
	// inTransitSince is when the oldest frame in partial started to
	// arrive (Unix nanoseconds), 0 when none is in transit. Written by
	// the goroutine in Recv, read by InTransitSince from any goroutine.
	inTransitSince atomic.Int64
}

func newConn(conn net.Conn, peer [32]byte, enc, dec *noise.CipherState, log *slog.Logger) *Conn {
	return &Conn{conn: conn, peer: peer, enc: enc, dec: dec, log: log}
}

// PeerKey returns the peer's authenticated static public key: the relay's
// key on a client, the client's device key on a relay.
func (c *Conn) PeerKey() [32]byte { return c.peer }

// InTransitSince returns when the oldest frame now in transit (received
// in part) started to arrive, on the real clock, or the zero time if no
// frame is in transit. It is safe to call from any goroutine; a relay uses
// it to close connections whose frames stall while small frames (pings)
// keep arriving.
func (c *Conn) InTransitSince() time.Time {
	if ns := c.inTransitSince.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// LocalAddr returns the underlying conn's local address.
func (c *Conn) LocalAddr() net.Addr { return c.conn.LocalAddr() }

// RemoteAddr returns the underlying conn's remote address.
func (c *Conn) RemoteAddr() net.Addr { return c.conn.RemoteAddr() }

// Close closes the channel and its conn. It unblocks Send and Recv, which
// then return errors wrapping net.ErrClosed. Calls after the first return
// nil.
func (c *Conn) Close() error {
	err := net.ErrClosed
	c.once.Do(func() {
		c.closed.Store(true)
		err = c.conn.Close()
		c.rwatch.mu.Lock()
		c.rwatch.closed = true
		if c.rwatch.stop != nil && c.rwatch.stop() {
			c.rwatch.stop = nil
		}
		c.rwatch.mu.Unlock()
	})
	if err == net.ErrClosed {
		return nil
	}
	return err
}

var bufPool = sync.Pool{New: func() any {
	b := make([]byte, max(writeBufLen, readBufLen))
	return &b
}}

// closedErr turns an I/O error after Close into one that wraps net.ErrClosed.
func (c *Conn) closedErr(err error) error {
	if c.closed.Load() && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("%w (%v)", net.ErrClosed, err)
	}
	return err
}
