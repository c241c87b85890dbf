package https

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
)

// Shaping (docs/transports.md section 4.5). The first shapeFrames writes in
// each direction of the tunnel's byte stream are framed with padding, so
// that the sizes of the first records a censor sees are drawn from a page
// load's rather than being those of the channel's handshake:
//
//	frame = data_len(2) pad_len(2) data(data_len) zeros(pad_len)
//
// data_len <= maxShapeData, pad_len <= maxShapePad; a frame may carry no
// data (the relay opens with one, its "page"). After shapeFrames frames in
// a direction, that direction's bytes are the channel's, unframed.
const (
	shapeFrames   = 10
	shapeHdrLen   = 4
	maxShapeData  = 16000
	maxShapePad   = 16384
	pageMin       = 3000 // the relay's opening "page" frame, bytes
	pageMax       = 15000
	clientSizeMin = 180 // a client frame's total size when its data is smaller
	clientSizeMax = 900
	relaySizeMin  = 600
	relaySizeMax  = 9000
	extraPadMax   = 256 // padding on a frame whose data exceeds its drawn size
)

var errShape = errors.New("bad shaping frame")

// shapedConn frames the first shapeFrames writes and reads of its conn.
type shapedConn struct {
	net.Conn

	frames int // shapeFrames, or 0 in tests of an unshaped tunnel

	wmu     sync.Mutex // wmu protects the write side
	wframes int
	rng     *rand.Rand
	min     int // a frame's drawn total size is in [min, max)
	max     int

	rmu     sync.Mutex // rmu protects the read side
	rframes int
	rdata   int // data bytes left in the current frame
	rpad    int // padding bytes left in the current frame
	hdr     [shapeHdrLen]byte
	nhdr    int
	scratch []byte
}

// newShapedConn returns c shaped; client picks the client's sizes. seed
// drives the sizes. frames is shapeFrames (tests use 0: no shaping).
func newShapedConn(c net.Conn, client bool, seed [32]byte, frames int) *shapedConn {
	s := &shapedConn{Conn: c, frames: frames, rng: rand.New(rand.NewChaCha8(seed))}
	s.min, s.max = relaySizeMin, relaySizeMax
	if client {
		s.min, s.max = clientSizeMin, clientSizeMax
	}
	return s
}

// writePage writes the relay's opening frame: padding the size of a page.
func (s *shapedConn) writePage() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.wframes >= s.frames {
		return nil
	}
	pad := pageMin + s.rng.IntN(pageMax-pageMin)
	return s.writeFrame(nil, min(pad, maxShapePad))
}

func (s *shapedConn) Write(p []byte) (int, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	n := 0
	for s.wframes < s.frames && len(p) > 0 {
		chunk := p[:min(len(p), maxShapeData)]
		size := s.min + s.rng.IntN(s.max-s.min)
		pad := size - shapeHdrLen - len(chunk)
		if pad < 0 {
			pad = s.rng.IntN(extraPadMax)
		}
		if err := s.writeFrame(chunk, pad); err != nil {
			return n, err
		}
		n += len(chunk)
		p = p[len(chunk):]
	}
	if len(p) == 0 {
		return n, nil
	}
	m, err := s.Conn.Write(p)
	return n + m, err
}

// writeFrame writes one frame; s.wmu is held. The frame's buffer is
// pooled, so an idle conn holds none.
func (s *shapedConn) writeFrame(data []byte, pad int) error {
	bp := shapePool.Get().(*[]byte)
	defer shapePool.Put(bp)
	*bp = appendShapeFrame((*bp)[:0], data, pad)
	s.wframes++
	if pw, ok := s.Conn.(piecesWriter); ok {
		_, err := pw.writePieces(*bp)
		return err
	}
	_, err := s.Conn.Write(*bp)
	return err
}

// piecesWriter is a conn that writes a shaped frame in records of its
// own choosing (the relay side; see serverConn.writePieces).
type piecesWriter interface {
	writePieces(p []byte) (int, error)
}

var shapePool = sync.Pool{New: func() any { b := make([]byte, 0, shapeHdrLen+maxShapeData+maxShapePad); return &b }}

// appendShapeFrame appends a frame of data and pad zero bytes to b.
func appendShapeFrame(b, data []byte, pad int) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(data)))
	b = binary.BigEndian.AppendUint16(b, uint16(pad))
	b = append(b, data...)
	return append(b, make([]byte, pad)...)
}

func (s *shapedConn) Read(p []byte) (int, error) {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	for s.rframes < s.frames || s.rdata > 0 || s.rpad > 0 {
		if len(p) == 0 {
			return 0, nil
		}
		n, done, err := s.readShaped(p)
		if n > 0 || err != nil {
			return n, err
		}
		if done {
			break
		}
	}
	return s.Conn.Read(p)
}

// readShaped reads at most one read's worth of the framed part of the
// stream. It returns data for p, or done once the last frame has ended.
func (s *shapedConn) readShaped(p []byte) (n int, done bool, err error) {
	switch {
	case s.rdata > 0:
		n, err = s.Conn.Read(p[:min(len(p), s.rdata)])
		s.rdata -= n
		s.finishFrame()
		if s.rdata > 0 || s.rpad > 0 {
			err = unexpectedEOF(err)
		}
		return n, false, err
	case s.rpad > 0:
		if s.scratch == nil {
			s.scratch = make([]byte, 2048)
		}
		m, err := s.Conn.Read(s.scratch[:min(len(s.scratch), s.rpad)])
		s.rpad -= m
		s.finishFrame()
		if s.rframes == s.frames && s.rpad == 0 {
			s.scratch = nil
		}
		return 0, s.rframes == s.frames && s.rpad == 0, unexpectedEOF(err)
	case s.rframes == s.frames:
		return 0, true, nil
	}
	m, err := s.Conn.Read(s.hdr[s.nhdr:])
	s.nhdr += m
	if s.nhdr < shapeHdrLen {
		if err != nil && s.nhdr > 0 {
			err = unexpectedEOF(err)
		}
		return 0, false, err
	}
	s.nhdr = 0
	d, pad, herr := parseShapeHeader(s.hdr)
	if herr != nil {
		return 0, false, herr
	}
	s.rdata, s.rpad = d, pad
	s.finishFrame()
	return 0, false, unexpectedEOF(err)
}

// finishFrame counts the current frame once its data and padding are read.
func (s *shapedConn) finishFrame() {
	if s.rdata == 0 && s.rpad == 0 {
		s.rframes++
	}
}

// parseShapeHeader parses a frame header.
func parseShapeHeader(h [shapeHdrLen]byte) (data, pad int, err error) {
	data = int(binary.BigEndian.Uint16(h[0:2]))
	pad = int(binary.BigEndian.Uint16(h[2:4]))
	if data > maxShapeData || pad > maxShapePad {
		return 0, 0, fmt.Errorf("read tunnel: %w: %d data and %d padding bytes", errShape, data, pad)
	}
	return data, pad, nil
}

// unexpectedEOF turns io.EOF in the middle of a frame into
// io.ErrUnexpectedEOF.
func unexpectedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
