package obfs

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
)

// Framing (docs/transports.md section 4.4). Each direction has its own
// AES-128-GCM key, nonce base and length-mask key; frame i of a direction
// is
//
//	hdr (2)  = uint16 big-endian len(ct) XOR AES-128(mask key, uint128 i)[0:2]
//	ct       = AES-128-GCM(key, nonce base XOR uint96 i, pt, no additional data)
//	pt       = type (1) || uint16 big-endian len(payload) || payload || zero padding
//
// so the stream is uniformly random bytes to anyone without the keys.
const (
	hdrLen      = 2
	tagLen      = 16
	ptHdrLen    = 3
	overhead    = hdrLen + ptHdrLen + tagLen // bytes a frame adds to its payload
	minCT       = ptHdrLen + tagLen          // shortest ct
	maxCT       = 1<<16 - 1                  // longest ct the header can say
	maxPayload  = 16 << 10                   // longest payload a sender puts in one frame
	frameData   = 0                          // the only frame type; others are skipped
	bulkMin     = 2048                       // writes this long go out unpadded, in maxPayload frames
	writeBatch  = 64 << 10                   // plaintext encrypted per write to the raw conn
	readBufSize = 2*(hdrLen+maxCT) + 2       // room for a whole frame after any partial one
	busyRead    = 4096                       // a raw read this long means a stream is flowing
)

// errFrame is the cause of a frame that fails authentication or parsing.
var errFrame = errors.New("obfs: bad frame")

var (
	readPool  = sync.Pool{New: func() any { b := make([]byte, readBufSize); return &b }}
	writePool = sync.Pool{New: func() any { b := make([]byte, 0, writeBatch+(writeBatch/maxPayload+2)*overhead+2048); return &b }}
)

// direction is one direction's keys and frame counter.
type direction struct {
	aead  cipher.AEAD
	mask  cipher.Block
	iv    [ivLen]byte
	count uint64
}

func newDirection(k []byte) (direction, error) {
	b, err := aes.NewCipher(k[:keyLen])
	if err != nil {
		return direction{}, err
	}
	aead, err := cipher.NewGCM(b)
	if err != nil {
		return direction{}, err
	}
	m, err := aes.NewCipher(k[keyLen+ivLen:])
	if err != nil {
		return direction{}, err
	}
	d := direction{aead: aead, mask: m}
	copy(d.iv[:], k[keyLen:keyLen+ivLen])
	return d, nil
}

func (d *direction) nonce() [ivLen]byte {
	n := d.iv
	var c [8]byte
	binary.BigEndian.PutUint64(c[:], d.count)
	for i := range c {
		n[ivLen-8+i] ^= c[i]
	}
	return n
}

func (d *direction) lengthMask() uint16 {
	var blk [16]byte
	binary.BigEndian.PutUint64(blk[8:], d.count)
	d.mask.Encrypt(blk[:], blk[:])
	return binary.BigEndian.Uint16(blk[:])
}

// Conn is an obfs connection: a net.Conn carrying frames over a raw
// net.Conn. Read and Write may be called concurrently with each other;
// Close unblocks both. Deadlines are the raw conn's, and the conn stays
// usable after one passes: a frame cut by a read deadline is finished by
// the next Read, one cut by a write deadline is finished by the next
// Write.
type Conn struct {
	net.Conn // the raw conn: addresses, deadlines and Close

	rmu   sync.Mutex // rmu protects the fields up to wmu
	rd    direction
	rbuf  *[]byte   // pooled while bytes are buffered; nil when idle
	rpos  int       // next unread byte of *rbuf
	rend  int       // end of the bytes read into *rbuf
	flen  int       // length of the current frame's ct once its header is read, else -1
	plain []byte    // payload not yet returned, inside *rbuf
	rerr  error     // sticky: a frame failed
	small [256]byte // an idle conn's reads land here, so it holds no big buffer
	busy  bool      // the last raw read filled at least busyRead bytes

	wmu   sync.Mutex // wmu protects the fields below
	wd    direction
	wpend []byte // the rest of a frame a write deadline cut
	werr  error  // sticky: a frame could not be sealed
	pad   padder
	ends  []frameEnd
}

var _ net.Conn = (*Conn)(nil)

// newConn makes a Conn over raw from session keys; rest holds bytes
// already read from raw after the peer's hello.
func newConn(raw net.Conn, readKeys, writeKeys []byte, seed [32]byte, rest []byte) (*Conn, error) {
	rd, err := newDirection(readKeys)
	if err != nil {
		return nil, fmt.Errorf("set up obfs keys: %w", err)
	}
	wd, err := newDirection(writeKeys)
	if err != nil {
		return nil, fmt.Errorf("set up obfs keys: %w", err)
	}
	c := &Conn{Conn: raw, rd: rd, wd: wd, flen: -1, pad: newPadder(seed)}
	if len(rest) > 0 {
		c.rbuf = readPool.Get().(*[]byte)
		c.rend = copy(*c.rbuf, rest)
	}
	return c, nil
}

// Read reads payload bytes.
func (c *Conn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for {
		if len(c.plain) > 0 {
			n := copy(p, c.plain)
			c.plain = c.plain[n:]
			c.releaseIfIdle()
			return n, nil
		}
		if c.rerr != nil {
			return 0, c.rerr
		}
		if len(p) == 0 {
			return 0, nil
		}
		if err := c.readFrame(); err != nil {
			return 0, err
		}
	}
}

// releaseIfIdle returns the read buffer to its pool when it holds nothing
// and the stream is quiet (the last raw read was short); a conn in the
// middle of a bulk transfer keeps it.
func (c *Conn) releaseIfIdle() {
	if c.rbuf != nil && !c.busy && len(c.plain) == 0 && c.rpos == c.rend && c.flen < 0 {
		readPool.Put(c.rbuf)
		c.rbuf, c.rpos, c.rend = nil, 0, 0
	}
}

// readFrame reads and opens the next frame, leaving its payload in plain.
func (c *Conn) readFrame() error {
	for {
		avail := c.rend - c.rpos
		if c.flen < 0 && avail >= hdrLen {
			c.flen = int(binary.BigEndian.Uint16((*c.rbuf)[c.rpos:]) ^ c.rd.lengthMask())
			c.rpos += hdrLen
			avail -= hdrLen
			if c.flen < minCT {
				c.rerr = errFrame
				return c.rerr
			}
		}
		if c.flen >= 0 && avail >= c.flen {
			return c.openFrame()
		}
		if err := c.fill(); err != nil {
			c.releaseIfIdle()
			return err
		}
	}
}

// openFrame decrypts the complete frame at rpos in place.
func (c *Conn) openFrame() error {
	ct := (*c.rbuf)[c.rpos : c.rpos+c.flen]
	nonce := c.rd.nonce()
	pt, err := c.rd.aead.Open(ct[:0], nonce[:], ct, nil)
	c.rpos += c.flen
	c.flen = -1
	c.rd.count++
	if err != nil {
		c.rerr = errFrame
		return c.rerr
	}
	n := int(binary.BigEndian.Uint16(pt[1:]))
	if n > len(pt)-ptHdrLen {
		c.rerr = errFrame
		return c.rerr
	}
	if pt[0] == frameData {
		c.plain = pt[ptHdrLen : ptHdrLen+n]
	}
	c.releaseIfIdle()
	return nil
}

// fill reads more bytes from the raw conn. A clean EOF between frames is
// io.EOF; inside a frame, io.ErrUnexpectedEOF.
func (c *Conn) fill() error {
	if c.rbuf == nil {
		n, err := c.Conn.Read(c.small[:])
		if n == 0 {
			if err == nil {
				err = io.ErrNoProgress
			}
			return err
		}
		c.rbuf = readPool.Get().(*[]byte)
		c.rpos, c.rend = 0, copy(*c.rbuf, c.small[:n])
		return nil
	}
	buf := *c.rbuf
	if len(buf)-c.rend < hdrLen+maxCT && c.rpos > 0 {
		c.rend = copy(buf, buf[c.rpos:c.rend])
		c.rpos = 0
	}
	if c.rpos == c.rend && c.flen < 0 {
		c.rpos, c.rend = 0, 0
	}
	n, err := c.Conn.Read(buf[c.rend:])
	c.rend += n
	c.busy = n >= busyRead
	if n > 0 {
		return nil
	}
	if err == io.EOF && (c.rend > c.rpos || c.flen >= 0) {
		return io.ErrUnexpectedEOF
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// frameEnd records where a sealed frame ends in the write buffer and how
// many payload bytes it and those before it carry.
type frameEnd struct{ wire, payload int }

// Write writes p as frames.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return 0, c.werr
	}
	if len(c.wpend) > 0 {
		n, err := c.Conn.Write(c.wpend)
		c.wpend = c.wpend[n:]
		if err != nil {
			return 0, err
		}
	}
	written := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), writeBatch)]
		n, err := c.writeChunk(chunk, len(p) >= bulkMin)
		written += n
		if err != nil {
			return written, err
		}
		p = p[len(chunk):]
	}
	return written, nil
}

// writeChunk seals chunk into frames and writes them in one raw write.
// If the raw write stops part-way, the frames not started are taken back
// (their counter values are used again), the rest of the one cut is kept
// in wpend, and the payload of the frames started is reported written.
func (c *Conn) writeChunk(chunk []byte, bulk bool) (int, error) {
	bp := writePool.Get().(*[]byte)
	defer writePool.Put(bp)
	buf := (*bp)[:0]
	c.ends = c.ends[:0]
	start := c.wd.count
	for off := 0; off < len(chunk) || off == 0; {
		n := min(len(chunk)-off, maxPayload)
		padLen := c.pad.padding(n, bulk, off+n == len(chunk))
		buf = c.seal(buf, chunk[off:off+n], padLen)
		off += n
		c.ends = append(c.ends, frameEnd{wire: len(buf), payload: off})
		if off == len(chunk) {
			break
		}
	}
	*bp = buf
	n, err := c.Conn.Write(buf)
	if err == nil {
		return len(chunk), nil
	}
	for i, e := range c.ends {
		if n < e.wire {
			c.wd.count = start + uint64(i)
			begin := 0
			if i > 0 {
				begin = c.ends[i-1].wire
			}
			if n > begin {
				c.wpend = append([]byte(nil), buf[n:e.wire]...)
				c.wd.count++
				return e.payload, err
			}
			if i == 0 {
				return 0, err
			}
			return c.ends[i-1].payload, err
		}
	}
	return len(chunk), err
}

// seal appends one frame carrying payload and padLen bytes of padding.
func (c *Conn) seal(buf, payload []byte, padLen int) []byte {
	ptLen := ptHdrLen + len(payload) + padLen
	ctLen := ptLen + tagLen
	at := len(buf)
	buf = slices.Grow(buf, hdrLen+ctLen)[:at+hdrLen+ptLen]
	binary.BigEndian.PutUint16(buf[at:], uint16(ctLen)^c.wd.lengthMask())
	pt := buf[at+hdrLen:]
	pt[0] = frameData
	binary.BigEndian.PutUint16(pt[1:], uint16(len(payload)))
	clear(pt[ptHdrLen+copy(pt[ptHdrLen:], payload):])
	nonce := c.wd.nonce()
	buf = c.wd.aead.Seal(buf[:at+hdrLen], nonce[:], pt[:ptLen], nil)
	c.wd.count++
	return buf
}

// padder decides each frame's padding from a per-connection table of
// wire sizes (docs/transports.md section 4.5).
type padder struct {
	rng   *rand.Rand
	sizes [8]int
	cum   [8]int
}

// Frame sizes of the padding table.
const (
	padMinSize = 40
	padMaxSize = 1448
)

func newPadder(seed [32]byte) padder {
	p := padder{rng: rand.New(rand.NewChaCha8(seed))}
	total := 0
	for i := range p.sizes {
		p.sizes[i] = padMinSize + p.rng.IntN(padMaxSize-padMinSize+1)
		total += 1 + p.rng.IntN(16)
		p.cum[i] = total
	}
	return p
}

// padding returns the padding of a frame with n payload bytes: in a bulk
// write, none but a random 0-255 on the last frame; otherwise enough to
// reach a size drawn from the table, or 0-63 bytes when the payload is
// longer than the draw.
func (p *padder) padding(n int, bulk, last bool) int {
	if bulk {
		if last {
			return p.rng.IntN(256)
		}
		return 0
	}
	w := p.rng.IntN(p.cum[len(p.cum)-1])
	size := p.sizes[0]
	for i, c := range p.cum {
		if w < c {
			size = p.sizes[i]
			break
		}
	}
	if need := n + overhead; size > need {
		return size - need
	}
	return p.rng.IntN(64)
}
