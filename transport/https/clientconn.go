package https

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// tunnelStream is the stream id of the tunnel request: the client's first.
const tunnelStream = 1

// maxDataFrame is the largest DATA frame payload the client sends or
// accepts (the HTTP/2 default SETTINGS_MAX_FRAME_SIZE, which Chromium
// keeps).
const maxDataFrame = 16384

// ErrRefused is returned (wrapped) by a Read on a conn whose upgrade the
// server did not accept: it answered like its website would, because the
// link's secret is not the server's, the clocks are too far apart, or the
// address is not a Ferry relay.
var ErrRefused = errors.New("the server answered as a website, not as a Ferry relay")

// h2conn is the client side of a tunnel: HTTP/2 stream 1 on a TLS
// connection, as a net.Conn. A goroutine (readLoop) reads frames; Read and
// Write wait on flow control and deadlines without holding locks the
// reader needs.
type h2conn struct {
	role  h2role
	tc    net.Conn
	batch *batchConn // under tc, if it gathers DATA writes into one system call; or nil
	src   io.Reader  // the peer's frames; read by readLoop only
	fr    *http2.Framer
	frd   framerSource // what fr reads: a frame header readLoop read already, then rd

	writeMu sync.Mutex // writeMu serialises Write calls, so each is contiguous

	frameMu sync.Mutex // frameMu protects the framer's writing side and bw
	bw      *bufio.Writer

	mu         sync.Mutex // mu protects the fields below
	recvq      [][]byte   // received, unread data: recvq[0][roff:], then the rest
	roff       int
	recvN      int   // unread bytes in recvq
	recvErr    error // ends Read once recv is drained: io.EOF or the stream's error
	status     int   // the response's :status, 0 before the response
	unackConn  int   // bytes read by the caller not yet returned by WINDOW_UPDATE
	unackStrm  int
	connSend   int64 // the server's flow-control windows for our DATA
	strmSend   int64
	initSend   int64 // the server's SETTINGS_INITIAL_WINDOW_SIZE
	maxFrame   int
	closed     bool
	changed    chan struct{} // closed and replaced whenever the state above changes
	rd, wd     *deadline
	loopDone   chan struct{}
	started    atomic.Bool // readLoop runs (Close waits for it)
	closedChan chan struct{}
}

// h2role is what differs between the two ends of a tunnel stream: the
// windows it advertised for receiving and the largest frame it accepts.
type h2role struct {
	server     bool
	recvStream int    // the stream window it advertised
	recvConn   int    // the connection window it advertised
	maxRead    uint32 // its SETTINGS_MAX_FRAME_SIZE
}

// The client's role: Chromium's windows and the default frame size.
var clientRole = h2role{recvStream: chromiumStreamWindow, recvConn: chromiumConnWindow, maxRead: maxDataFrame}

func newH2Conn(tc net.Conn) *h2conn { return newH2ConnRole(tc, tc, clientRole) }

// newH2ConnRole returns an end of a tunnel stream that writes to tc and
// reads frames from rd (tc, or bytes already read from it and then tc).
func newH2ConnRole(tc net.Conn, rd io.Reader, role h2role) *h2conn {
	c := &h2conn{
		role:       role,
		tc:         tc,
		src:        rd,
		bw:         bufio.NewWriterSize(tc, 2048), // the opening and control frames; DATA passes through
		connSend:   65535,                         // RFC 9113 6.9.2: until the server's SETTINGS
		strmSend:   65535,
		initSend:   65535,
		maxFrame:   maxDataFrame,
		changed:    make(chan struct{}),
		rd:         newDeadline(),
		wd:         newDeadline(),
		loopDone:   make(chan struct{}),
		closedChan: make(chan struct{}),
	}
	c.frd.rd = rd
	c.fr = http2.NewFramer(c.bw, &c.frd)
	c.fr.SetMaxReadFrameSize(role.maxRead)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil) // the peer's table: the default size
	c.fr.MaxHeaderListSize = 262144
	if role.server {
		c.status = 200 // the response is the relay's to give
	}
	c.fr.SetReuseFrames()
	return c
}

// start writes the connection's opening, as Chromium does, with the
// request in headers, and starts the frame reader.
func (c *h2conn) start(headers []hpack.HeaderField) error {
	var block []byte
	{
		var buf writeBuffer
		enc := newHPACK(&buf)
		for _, f := range headers {
			if err := enc.WriteField(f); err != nil {
				return fmt.Errorf("encode request: %w", err)
			}
		}
		block = buf
	}
	c.frameMu.Lock()
	defer c.frameMu.Unlock()
	if _, err := c.bw.WriteString(http2.ClientPreface); err != nil {
		return err
	}
	c.fr.WriteSettings(chromiumSettings...)
	c.fr.WriteWindowUpdate(0, chromiumWindowUpdate)
	err := c.fr.WriteHeaders(http2.HeadersFrameParam{
		StreamID:      tunnelStream,
		BlockFragment: block,
		EndHeaders:    true,
		Priority:      http2.PriorityParam{Exclusive: true, Weight: chromiumPriorityWeight},
	})
	if err == nil {
		err = c.bw.Flush()
	}
	if err != nil {
		return fmt.Errorf("write request: %w", err)
	}
	c.started.Store(true)
	go c.readLoop()
	return nil
}

// newHPACK returns the request header encoder: Huffman strings and
// incremental indexing, which is how Chromium encodes (checked by
// TestHelloMatchesChromium).
func newHPACK(w io.Writer) *hpack.Encoder { return hpack.NewEncoder(w) }

// startServer writes the relay's side of the opening after goSettings
// (net/http's connection WINDOW_UPDATE, then the response's HEADERS) and
// starts the frame reader.
func (c *h2conn) startServer(now time.Time) error {
	var block writeBuffer
	enc := newHPACK(&block)
	for _, f := range []hpack.HeaderField{
		{Name: ":status", Value: "200"},
		{Name: "content-type", Value: "text/html; charset=utf-8"},
		{Name: "date", Value: now.UTC().Format(http.TimeFormat)},
	} {
		enc.WriteField(f)
	}
	err := c.writeFrames(func() error {
		if err := c.fr.WriteWindowUpdate(0, goWindow-65535); err != nil {
			return err
		}
		return c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: tunnelStream, BlockFragment: block, EndHeaders: true})
	})
	if err != nil {
		return fmt.Errorf("write response: %w", err)
	}
	c.started.Store(true)
	go c.readLoop()
	return nil
}

type writeBuffer []byte

func (b *writeBuffer) Write(p []byte) (int, error) { *b = append(*b, p...); return len(p), nil }

// broadcast wakes every waiter; c.mu is held.
func (c *h2conn) broadcast() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// fail ends the stream with err (if it has not ended); c.mu is held.
func (c *h2conn) failLocked(err error) {
	if c.recvErr == nil {
		c.recvErr = err
	}
	c.broadcast()
}

// readLoop reads the peer's frames. DATA frames of the tunnel stream (the
// bulk) are read straight into pooled chunks; every other frame goes
// through the framer, which is handed the header readLoop read.
func (c *h2conn) readLoop() {
	defer close(c.loopDone)
	var hdr [frameHeaderLen]byte
	for {
		_, err := io.ReadFull(c.src, hdr[:])
		if err == nil {
			if length, ok := plainData(hdr, c.role.maxRead); ok {
				err = c.readData(length, hdr[4]&flagEndStream != 0)
			} else {
				c.frd.hdr, c.frd.n = hdr, 0
				var f http2.Frame
				if f, err = c.fr.ReadFrame(); err == nil {
					err = c.handle(f)
				}
			}
		}
		if err != nil {
			c.mu.Lock()
			if c.closed {
				err = net.ErrClosed
			} else if err == io.EOF {
				err = io.ErrUnexpectedEOF // the TLS connection ended without END_STREAM
			}
			c.failLocked(err)
			c.mu.Unlock()
			return
		}
	}
}

// The frame header (RFC 9113 4.1): length(3) type(1) flags(1) stream(4).
const (
	frameHeaderLen = 9
	flagEndStream  = 0x1
	flagPadded     = 0x8
)

// plainData reports whether hdr is that of an unpadded DATA frame of the
// tunnel stream within maxRead, and its length. Every other frame is left
// to the framer, with its checks and errors.
func plainData(hdr [frameHeaderLen]byte, maxRead uint32) (length int, ok bool) {
	n := uint32(hdr[0])<<16 | uint32(hdr[1])<<8 | uint32(hdr[2])
	stream := binary.BigEndian.Uint32(hdr[5:]) & (1<<31 - 1)
	if hdr[3] != byte(http2.FrameData) || hdr[4]&flagPadded != 0 || stream != tunnelStream || n > maxRead {
		return 0, false
	}
	return int(n), true
}

// readData reads the payload of an unpadded DATA frame of the tunnel
// stream into chunks and queues them, as handleData does with a frame the
// framer read. Readers are woken once per frame.
func (c *h2conn) readData(length int, end bool) error {
	var stack [4][]byte
	chunks := stack[:0]
	for length > 0 {
		chunk := getChunk(min(length, maxDataFrame))
		chunks = append(chunks, chunk)
		if _, err := io.ReadFull(c.src, chunk); err != nil {
			for _, b := range chunks {
				putChunk(b)
			}
			return unexpectedEOF(err)
		}
		length -= len(chunk)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.queueLocked(chunks, 0, end)
}

// framerSource is the framer's reader: the header of the frame it is to
// read (which readLoop has read already), then the connection.
type framerSource struct {
	hdr [frameHeaderLen]byte
	n   int // bytes of hdr already given to the framer
	rd  io.Reader
}

func (s *framerSource) Read(p []byte) (int, error) {
	if s.n < len(s.hdr) {
		m := copy(p, s.hdr[s.n:])
		s.n += m
		return m, nil
	}
	return s.rd.Read(p)
}

// handle processes one frame from the server.
func (c *h2conn) handle(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.DataFrame:
		return c.handleData(f)
	case *http2.MetaHeadersFrame:
		return c.handleHeaders(f)
	case *http2.SettingsFrame:
		return c.handleSettings(f)
	case *http2.WindowUpdateFrame:
		c.mu.Lock()
		defer c.mu.Unlock()
		switch f.StreamID {
		case 0:
			c.connSend += int64(f.Increment)
		case tunnelStream:
			c.strmSend += int64(f.Increment)
		}
		c.broadcast()
	case *http2.PingFrame:
		if !f.IsAck() {
			return c.writeFrames(func() error { return c.fr.WritePing(true, f.Data) })
		}
	case *http2.RSTStreamFrame:
		if f.StreamID == tunnelStream {
			c.mu.Lock()
			c.failLocked(fmt.Errorf("read tunnel: server reset the stream (%v)", f.ErrCode))
			c.mu.Unlock()
		}
	case *http2.GoAwayFrame:
		if f.LastStreamID < tunnelStream {
			return fmt.Errorf("read tunnel: server went away (%v)", f.ErrCode)
		}
	case *http2.PushPromiseFrame:
		return errors.New("read tunnel: server pushed although push is off")
	}
	return nil
}

func (c *h2conn) handleHeaders(f *http2.MetaHeadersFrame) error {
	if f.StreamID != tunnelStream {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.role.server {
		if f.StreamEnded() { // the request without a body: nothing to read
			c.failLocked(io.EOF)
		}
		return nil
	}
	if c.status != 0 {
		if f.StreamEnded() { // trailers
			c.failLocked(io.EOF)
		}
		return nil
	}
	status, err := strconv.Atoi(f.PseudoValue("status"))
	if err != nil || status < 100 || status > 999 {
		return errors.New("read tunnel: response without a valid :status")
	}
	if status < 200 {
		return nil // 1xx: informational, the response follows
	}
	c.status = status
	if status != 200 {
		c.failLocked(fmt.Errorf("read tunnel: %w (status %d)", ErrRefused, status))
	} else if f.StreamEnded() {
		c.failLocked(io.EOF)
	}
	c.broadcast()
	return nil
}

func (c *h2conn) handleData(f *http2.DataFrame) error {
	var chunk []byte
	if len(f.Data()) > 0 {
		chunk = chunkOf(f.Data())
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	// The whole frame, padding included, counts against the window
	// (RFC 9113 6.9.1).
	pad := int(f.Header().Length) - len(f.Data())
	if f.StreamID != tunnelStream {
		putChunk(chunk)
		c.unackConn += pad + len(chunk)
		return nil
	}
	return c.queueLocked([][]byte{chunk}, pad, f.StreamEnded())
}

// queueLocked takes the data (in chunks) and padding of a DATA frame of
// the tunnel stream: the data is queued for Read (or dropped, and its
// window returned, if the stream is not open for reading), and the padding
// is returned to the peer at once, with the data it consumes. c.mu is
// held.
func (c *h2conn) queueLocked(chunks [][]byte, pad int, end bool) error {
	c.unackConn += pad
	if c.status != 200 || c.recvErr != nil {
		for _, b := range chunks {
			putChunk(b)
			c.unackConn += len(b)
		}
		return nil
	}
	c.unackStrm += pad
	for _, b := range chunks {
		if len(b) > 0 {
			c.recvq = append(c.recvq, b)
			c.recvN += len(b)
		}
	}
	if c.recvN > c.role.recvStream {
		return errors.New("read tunnel: server overran the flow-control window")
	}
	if end {
		c.failLocked(io.EOF)
	}
	c.broadcast()
	return nil
}

func (c *h2conn) handleSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	c.mu.Lock()
	err := f.ForeachSetting(func(s http2.Setting) error {
		switch s.ID {
		case http2.SettingInitialWindowSize:
			if s.Val > 1<<31-1 {
				return errors.New("read tunnel: server's initial window too large")
			}
			// RFC 9113 6.9.2: the change applies to open streams.
			c.strmSend += int64(s.Val) - c.initSend
			c.initSend = int64(s.Val)
		case http2.SettingMaxFrameSize:
			c.maxFrame = min(int(s.Val), sendFrame)
		}
		return nil
	})
	c.broadcast()
	c.mu.Unlock()
	if err != nil {
		return err
	}
	return c.writeFrames(func() error { return c.fr.WriteSettingsAck() })
}

// writeFrames runs write (which writes frames with c.fr) and flushes.
func (c *h2conn) writeFrames(write func() error) error {
	c.frameMu.Lock()
	defer c.frameMu.Unlock()
	if err := write(); err != nil {
		return err
	}
	return c.bw.Flush()
}

func (c *h2conn) Read(p []byte) (int, error) {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return 0, net.ErrClosed
		}
		select {
		case <-c.rd.wait():
			c.mu.Unlock()
			return 0, timeoutError{"read tunnel"}
		default:
		}
		if c.recvN > 0 {
			n := c.takeLocked(p)
			update := c.consumedLocked(n)
			c.mu.Unlock()
			if update != nil {
				if err := c.writeFrames(update); err != nil {
					return n, err
				}
			}
			return n, nil
		}
		if c.recvErr != nil {
			err := c.recvErr
			c.mu.Unlock()
			return 0, err
		}
		changed := c.changed
		c.mu.Unlock()
		select {
		case <-changed:
		case <-c.rd.wait():
		}
	}
}

// takeLocked copies received data into p, returning emptied chunks to
// their pool; c.mu is held.
func (c *h2conn) takeLocked(p []byte) int {
	n := 0
	for n < len(p) && len(c.recvq) > 0 {
		head := c.recvq[0]
		m := copy(p[n:], head[c.roff:])
		n += m
		c.roff += m
		if c.roff == len(head) {
			putChunk(head)
			c.recvq[0] = nil
			c.recvq, c.roff = c.recvq[1:], 0
		}
	}
	if len(c.recvq) == 0 {
		c.recvq = nil // an idle conn holds no queue
	}
	c.recvN -= n
	return n
}

// Received DATA is copied into chunks from a pool, so that a quiet
// conn holds none and a busy one does not grow and copy one buffer.
var chunkPool = sync.Pool{New: func() any { b := make([]byte, maxDataFrame); return &b }}

func chunkOf(data []byte) []byte {
	if len(data) > maxDataFrame {
		return append([]byte(nil), data...)
	}
	b := getChunk(len(data))
	copy(b, data)
	return b
}

// getChunk returns a pooled chunk of n <= maxDataFrame bytes.
func getChunk(n int) []byte { return (*chunkPool.Get().(*[]byte))[:n] }

func putChunk(b []byte) {
	if cap(b) == maxDataFrame {
		b = b[:cap(b)]
		chunkPool.Put(&b)
	}
}

// consumedLocked counts n bytes read by the caller and returns a write of
// the WINDOW_UPDATE frames due, if any: like Chromium, once half of a
// window has been consumed. c.mu is held.
func (c *h2conn) consumedLocked(n int) func() error {
	c.unackConn += n
	c.unackStrm += n
	var conn, strm uint32
	if c.unackConn >= c.role.recvConn/2 {
		conn, c.unackConn = uint32(c.unackConn), 0
	}
	if c.unackStrm >= c.role.recvStream/2 && c.recvErr == nil {
		strm, c.unackStrm = uint32(c.unackStrm), 0
	}
	if conn == 0 && strm == 0 {
		return nil
	}
	return func() error {
		if conn > 0 {
			if err := c.fr.WriteWindowUpdate(0, conn); err != nil {
				return err
			}
		}
		if strm > 0 {
			return c.fr.WriteWindowUpdate(tunnelStream, strm)
		}
		return nil
	}
}

func (c *h2conn) Write(p []byte) (int, error) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	bp := sendPool.Get().(*[]byte)
	defer sendPool.Put(bp)
	n := 0
	for len(p) > 0 {
		// Frames go out as the server's windows grant them, gathered into
		// writes of up to sendBatch bytes (TLS cuts them into records).
		buf := (*bp)[:0]
		for len(p) > 0 && len(buf)+frameHeaderLen < sendBatch {
			m, err := c.reserve(min(len(p), sendBatch-len(buf)-frameHeaderLen), len(buf) == 0)
			if err != nil {
				if len(buf) > 0 {
					c.writeRaw(buf)
				}
				return n, err
			}
			if m == 0 {
				break // no window now: send what we have, then wait
			}
			buf = appendDataFrame(buf, p[:m])
			n += m
			p = p[m:]
		}
		if err := c.writeRaw(buf); err != nil {
			return n, err
		}
	}
	return n, nil
}

// sendBatch is how many bytes of DATA frames, headers included, a Write
// gathers before it hands them to TLS (which cuts them into four full
// records) in one system call; sendFrame the largest DATA payload it
// sends (within the server's SETTINGS_MAX_FRAME_SIZE; inside TLS nobody
// sees frames).
const (
	sendBatch = 64 << 10
	sendFrame = sendBatch - frameHeaderLen
)

var sendPool = sync.Pool{New: func() any { b := make([]byte, 0, sendBatch); return &b }}

// appendDataFrame appends a DATA frame of stream 1 carrying data
// (RFC 9113 4.1, 6.1): length(3) type(1)=0 flags(1)=0 stream(4).
func appendDataFrame(b, data []byte) []byte {
	n := len(data)
	b = append(b, byte(n>>16), byte(n>>8), byte(n), 0, 0, 0, 0, 0, tunnelStream)
	return append(b, data...)
}

// writeRaw writes frames already encoded, after any buffered ones, with
// one system call for all their records.
func (c *h2conn) writeRaw(b []byte) error {
	c.frameMu.Lock()
	defer c.frameMu.Unlock()
	c.batch.start()
	_, err := c.bw.Write(b)
	if err == nil {
		err = c.bw.Flush()
	}
	if ferr := c.batch.flush(); err == nil {
		err = ferr
	}
	if err != nil {
		return c.writeErr(err)
	}
	return nil
}

func (c *h2conn) writeErr(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return timeoutError{"write tunnel"}
	}
	return fmt.Errorf("write tunnel: %w", err)
}

// reserve takes up to want bytes (at most one frame's worth) of the
// server's windows. If they are empty it waits (until the write deadline)
// when wait is set, and returns 0 otherwise.
func (c *h2conn) reserve(want int, wait bool) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if c.closed {
			return 0, net.ErrClosed
		}
		select {
		case <-c.wd.wait():
			return 0, timeoutError{"write tunnel"}
		default:
		}
		if c.recvErr != nil && c.recvErr != io.EOF {
			return 0, c.recvErr
		}
		if c.connSend > 0 && c.strmSend > 0 {
			n := int(min(int64(want), int64(c.maxFrame), c.connSend, c.strmSend))
			c.connSend -= int64(n)
			c.strmSend -= int64(n)
			return n, nil
		}
		if !wait {
			return 0, nil
		}
		changed := c.changed
		c.mu.Unlock()
		select {
		case <-changed:
		case <-c.wd.wait():
		}
		c.mu.Lock()
	}
}

// Close ends the stream (END_STREAM, if no write is in progress) and the
// TLS connection, and waits for the frame reader.
func (c *h2conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	close(c.closedChan)
	c.broadcast()
	c.mu.Unlock()
	if c.frameMu.TryLock() {
		c.tc.SetWriteDeadline(time.Now().Add(time.Second))
		if c.fr.WriteData(tunnelStream, true, nil) == nil {
			c.bw.Flush()
		}
		c.frameMu.Unlock()
	}
	err := c.tc.Close()
	if c.started.Load() {
		<-c.loopDone
	}
	return err
}

func (c *h2conn) LocalAddr() net.Addr  { return c.tc.LocalAddr() }
func (c *h2conn) RemoteAddr() net.Addr { return c.tc.RemoteAddr() }

func (c *h2conn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

func (c *h2conn) SetReadDeadline(t time.Time) error {
	c.rd.set(t)
	return nil
}

// SetWriteDeadline bounds Write's wait for flow control and its write to
// TLS. A write that times out inside TLS breaks the conn (crypto/tls
// cannot resume it); one that times out waiting for the server's window
// leaves it usable.
func (c *h2conn) SetWriteDeadline(t time.Time) error {
	c.wd.set(t)
	return c.tc.SetWriteDeadline(t)
}
