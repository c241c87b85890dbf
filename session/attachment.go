package session

import (
	"crypto/cipher"
	"crypto/sha256"
	"crypto/subtle"
	"encoding"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"
)

// Attachments are encrypted once with a random per-attachment key and
// uploaded to the relay's blob store; the message carries an
// AttachmentPointer (key, digest, size). The blob is a STREAM construction
// modelled on age's payload (C2SP agead), with AES-256-GCM in place of
// ChaCha20-Poly1305 (docs/protocol.md section 3.3):
//
//	blob        = nonce(16) || commitment(32) || chunk_0 || ... || chunk_{n-1}
//	payload key || commitment = HKDF-SHA-256(ikm = attachment key, salt = nonce, info = "Ferry attachment v1 payload", 64)
//	chunk_i     = AES-256-GCM(payload key, counter_i, plaintext_i, no AD)   (plaintext_i: 64 KiB, the last 1..64 KiB)
//	counter_i   = i as an 11-byte big-endian integer || last flag (0x01 for chunk n-1, else 0x00)
//
// An empty attachment is one empty final chunk. A non-empty attachment has
// no empty chunk. The commitment makes the blob key-committing: no blob
// opens under two keys (AES-GCM alone would allow it).
const (
	// AttachmentChunkSize is the plaintext size of every chunk but the last.
	AttachmentChunkSize = 64 << 10
	// MaxAttachmentSize bounds an attachment's plaintext (1 TiB).
	MaxAttachmentSize = 1 << 40

	attachmentKeyLen    = 32
	attachmentNonceLen  = 16
	attachmentCommitLen = 32
	attachmentHeaderLen = attachmentNonceLen + attachmentCommitLen
	attachmentTagLen    = 16
	attachmentSealedLen = AttachmentChunkSize + attachmentTagLen
	attachmentInfo      = "Ferry attachment v1 payload"

	lastChunkFlag = 0x01
)

// Attachment pointer encoding, version 1 (77 bytes):
//
//	version(1) = 0x01 || key(32) || digest(32) || size(8, big-endian) || chunk size(4, big-endian) = 65536
const (
	attachmentPointerVersion = 0x01
	attachmentPointerLen     = 1 + attachmentKeyLen + sha256.Size + 8 + 4
)

// Errors returned by attachment decryption.
var (
	// ErrAttachmentTruncated reports a blob that ends before its last chunk.
	ErrAttachmentTruncated = errors.New("attachment truncated")
	// ErrAttachmentCorrupt reports a chunk that fails authentication (a
	// modified, reordered or duplicated chunk, or a wrong key), trailing
	// data, or a digest that does not match.
	ErrAttachmentCorrupt = errors.New("attachment corrupt")
)

// An AttachmentPointer is what a message carries so that its recipient can
// fetch, check and decrypt an attachment. It is secret (it holds the key).
type AttachmentPointer struct {
	Key    [attachmentKeyLen]byte // random per attachment
	Digest [sha256.Size]byte      // SHA-256 of the whole blob (nonce and chunks)
	Size   int64                  // plaintext length in bytes
}

// chunks returns the number of chunks of a size-byte plaintext.
func attachmentChunks(size int64) int64 {
	if size == 0 {
		return 1
	}
	return (size + AttachmentChunkSize - 1) / AttachmentChunkSize
}

// CiphertextSize returns the length of the blob for p.Size plaintext bytes.
func (p *AttachmentPointer) CiphertextSize() int64 {
	return attachmentHeaderLen + p.Size + attachmentTagLen*attachmentChunks(p.Size)
}

// MarshalBinary encodes p (version 1, 77 bytes).
func (p *AttachmentPointer) MarshalBinary() ([]byte, error) {
	if p.Size < 0 || p.Size > MaxAttachmentSize {
		return nil, fmt.Errorf("marshal attachment pointer: size %d out of range", p.Size)
	}
	b := make([]byte, 0, attachmentPointerLen)
	b = append(b, attachmentPointerVersion)
	b = append(b, p.Key[:]...)
	b = append(b, p.Digest[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(p.Size))
	return binary.BigEndian.AppendUint32(b, AttachmentChunkSize), nil
}

// UnmarshalBinary decodes a pointer encoded by MarshalBinary.
func (p *AttachmentPointer) UnmarshalBinary(b []byte) error {
	if len(b) != attachmentPointerLen {
		return fmt.Errorf("unmarshal attachment pointer: length %d: %w", len(b), ErrMalformed)
	}
	if b[0] != attachmentPointerVersion {
		return fmt.Errorf("unmarshal attachment pointer: version %d: %w", b[0], ErrMalformed)
	}
	size := binary.BigEndian.Uint64(b[65:73])
	if size > MaxAttachmentSize {
		return fmt.Errorf("unmarshal attachment pointer: size %d out of range: %w", size, ErrMalformed)
	}
	if cs := binary.BigEndian.Uint32(b[73:77]); cs != AttachmentChunkSize {
		return fmt.Errorf("unmarshal attachment pointer: chunk size %d: %w", cs, ErrMalformed)
	}
	copy(p.Key[:], b[1:33])
	copy(p.Digest[:], b[33:65])
	p.Size = int64(size)
	return nil
}

// newAttachmentAEAD derives the payload key and the key commitment, and
// returns the payload key's AEAD and the commitment.
func newAttachmentAEAD(key *[attachmentKeyLen]byte, nonce []byte) (cipher.AEAD, [attachmentCommitLen]byte) {
	var okm [32 + attachmentCommitLen]byte
	hkdfSHA256(okm[:], nonce, key[:], attachmentInfo)
	defer clear(okm[:])
	return aesGCM(okm[:32]), [attachmentCommitLen]byte(okm[32:])
}

// openAttachmentHeader checks a blob's header against key and returns the
// payload key's AEAD.
func openAttachmentHeader(key *[attachmentKeyLen]byte, hdr *[attachmentHeaderLen]byte) (cipher.AEAD, error) {
	a, commit := newAttachmentAEAD(key, hdr[:attachmentNonceLen])
	if subtle.ConstantTimeCompare(commit[:], hdr[attachmentNonceLen:]) != 1 {
		return nil, fmt.Errorf("open attachment: %w: key commitment mismatch", ErrAttachmentCorrupt)
	}
	return a, nil
}

// setChunkNonce writes counter i and the last flag into n.
func setChunkNonce(n *[12]byte, i uint64, last bool) {
	n[0], n[1], n[2] = 0, 0, 0
	binary.BigEndian.PutUint64(n[3:11], i)
	n[11] = 0
	if last {
		n[11] = lastChunkFlag
	}
}

// An AttachmentWriter encrypts an attachment as it is written, writing the
// blob to an underlying writer. Close writes the last chunk; Pointer then
// returns the pointer to send. After a failed write to the underlying
// writer, Checkpoint records how far the upload got, and
// ResumeAttachmentWriter continues it with identical bytes. It is not safe
// for concurrent use.
type AttachmentWriter struct {
	dst    io.Writer
	aead   cipher.AEAD
	key    [attachmentKeyLen]byte
	header [attachmentNonceLen]byte // the blob's nonce
	commit [attachmentCommitLen]byte
	nonce  [12]byte // the chunk nonce
	digest hash.Hash
	buf    []byte // one sealed chunk; plaintext in buf[:n]
	n      int
	chunk  uint64 // chunks written to dst
	size   int64  // plaintext accepted
	err    error  // sticky
	closed bool
	// resumeChunk is the index of the in-flight chunk.
	resumeChunk uint64
	// inflight is SHA-256(last flag || plaintext) of the chunk whose write
	// failed (its bytes may have reached the relay); resume makes the
	// resumed writer refuse to seal that chunk's nonce over other bytes.
	inflight    [sha256.Size]byte
	hasInflight bool
}

var _ io.WriteCloser = (*AttachmentWriter)(nil)

// NewAttachmentWriter draws a new attachment key and nonce from rand, writes
// the blob's header to dst and returns a writer for the plaintext.
func NewAttachmentWriter(rand io.Reader, dst io.Writer) (*AttachmentWriter, error) {
	w := &AttachmentWriter{dst: dst, digest: sha256.New()}
	if _, err := io.ReadFull(rand, w.key[:]); err != nil {
		return nil, fmt.Errorf("generate attachment key: %w", err)
	}
	if _, err := io.ReadFull(rand, w.header[:]); err != nil {
		return nil, fmt.Errorf("generate attachment nonce: %w", err)
	}
	w.init()
	if err := w.emit(append(w.header[:], w.commit[:]...)); err != nil {
		return nil, fmt.Errorf("write attachment header: %w", err)
	}
	return w, nil
}

// init derives the payload AEAD and allocates the chunk buffer.
func (w *AttachmentWriter) init() {
	w.aead, w.commit = newAttachmentAEAD(&w.key, w.header[:])
	w.buf = make([]byte, attachmentSealedLen)
}

// emit writes b to dst and the digest.
func (w *AttachmentWriter) emit(b []byte) error {
	n, err := w.dst.Write(b)
	if err == nil && n != len(b) {
		err = io.ErrShortWrite
	}
	if err != nil {
		return err
	}
	w.digest.Write(b)
	return nil
}

// sealChunk encrypts pt (the buffered plaintext, sealed in place, or a
// full chunk of the caller's) into buf and writes it.
func (w *AttachmentWriter) sealChunk(pt []byte, last bool) error {
	setChunkNonce(&w.nonce, w.chunk, last)
	if w.hasInflight && w.chunk == w.resumeChunk {
		// The first chunk of a resumed upload reuses the nonce of the
		// chunk whose write failed: it must be the same plaintext, or
		// GCM would leak both and its authentication key.
		if chunkHash(pt, last) != w.inflight {
			w.err = fmt.Errorf("resume attachment: chunk %d differs from the interrupted upload (source changed)", w.chunk)
			return w.err
		}
		w.hasInflight = false
	}
	ct := w.aead.Seal(w.buf[:0], w.nonce[:], pt, nil)
	if err := w.emit(ct); err != nil {
		w.err = fmt.Errorf("write attachment chunk %d: %w", w.chunk, err)
		// pt may have been sealed in place: recover it from ct.
		if p, oerr := w.aead.Open(nil, w.nonce[:], ct, nil); oerr == nil {
			w.inflight, w.hasInflight, w.resumeChunk = chunkHash(p, last), true, w.chunk
			clear(p)
		}
		return w.err
	}
	w.chunk++
	w.n = 0
	return nil
}

// chunkHash is SHA-256(last flag || plaintext) of one chunk.
func chunkHash(pt []byte, last bool) [sha256.Size]byte {
	h := sha256.New()
	flag := [1]byte{}
	if last {
		flag[0] = lastChunkFlag
	}
	h.Write(flag[:])
	h.Write(pt)
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
}

// Write encrypts p. A full chunk is held back until more data arrives or
// Close, since only then is it known whether it is the last.
func (w *AttachmentWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.closed {
		return 0, errors.New("write attachment: writer closed")
	}
	if int64(len(p)) > MaxAttachmentSize-w.size {
		return 0, errors.New("write attachment: too large")
	}
	total := 0
	for len(p) > 0 {
		if w.n == AttachmentChunkSize {
			if err := w.sealChunk(w.buf[:w.n], false); err != nil {
				return total, err
			}
		}
		if w.n == 0 && len(p) > AttachmentChunkSize {
			// A full chunk with more data after it: seal it without copying.
			if err := w.sealChunk(p[:AttachmentChunkSize], false); err != nil {
				return total, err
			}
			p = p[AttachmentChunkSize:]
			total += AttachmentChunkSize
			w.size += AttachmentChunkSize
			continue
		}
		c := copy(w.buf[w.n:AttachmentChunkSize], p)
		w.n += c
		p = p[c:]
		total += c
		w.size += int64(c)
	}
	return total, nil
}

// Close writes the last chunk. It does not close the underlying writer.
// Calling Close again returns the first call's result.
func (w *AttachmentWriter) Close() error {
	if w.closed || w.err != nil {
		return w.err
	}
	if err := w.sealChunk(w.buf[:w.n], true); err != nil {
		return err
	}
	w.closed = true
	clear(w.buf)
	return nil
}

// Pointer returns the pointer to the attachment written. It fails before a
// successful Close.
func (w *AttachmentWriter) Pointer() (AttachmentPointer, error) {
	if !w.closed || w.err != nil {
		return AttachmentPointer{}, errors.New("attachment pointer: writer not closed")
	}
	p := AttachmentPointer{Key: w.key, Size: w.size}
	w.digest.Sum(p.Digest[:0])
	return p, nil
}

// Checkpoint returns the state after the last chunk fully written to the
// underlying writer, from which ResumeAttachmentWriter continues an
// interrupted upload. It may be called after a failed Write.
func (w *AttachmentWriter) Checkpoint() (*AttachmentCheckpoint, error) {
	if w.closed {
		return nil, errors.New("checkpoint attachment: writer closed")
	}
	st, err := w.digest.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("checkpoint attachment: %v", err)
	}
	c := &AttachmentCheckpoint{Key: w.key, Nonce: w.header, Chunks: w.chunk, digestState: st}
	if w.hasInflight && w.resumeChunk == w.chunk {
		c.inflight, c.hasInflight = w.inflight, true
	}
	return c, nil
}

// An AttachmentCheckpoint records how much of an attachment upload
// completed: its key, its nonce, the number of chunks written and the state
// of the digest over them, and, after a failed write, a hash of the chunk
// being written, which the resumed writer must reproduce exactly (the
// source must not change). It is secret; clients keep it in their
// encrypted store.
type AttachmentCheckpoint struct {
	Key         [attachmentKeyLen]byte
	Nonce       [attachmentNonceLen]byte
	Chunks      uint64 // full (non-last) chunks written
	digestState []byte // SHA-256 state over the blob so far (Go's encoding)
	inflight    [sha256.Size]byte
	hasInflight bool
}

// PlaintextOffset is where the resumed plaintext must start.
func (c *AttachmentCheckpoint) PlaintextOffset() int64 {
	return int64(c.Chunks) * AttachmentChunkSize
}

// CiphertextOffset is where the resumed blob continues.
func (c *AttachmentCheckpoint) CiphertextOffset() int64 {
	return attachmentHeaderLen + int64(c.Chunks)*attachmentSealedLen
}

// Attachment checkpoint encoding, version 2 (local store only):
//
//	version(1) = 0x02 || key(32) || nonce(16) || chunks(8, big-endian)
//	|| in-flight flag(1) (0 or 1) || in-flight chunk hash(32) (zeros if flag 0)
//	|| digest state length(2) || digest state
const (
	checkpointVersion   = 0x02
	checkpointFixedLen  = 1 + attachmentKeyLen + attachmentNonceLen + 8 + 1 + sha256.Size + 2
	maxDigestStateLen   = 256
	maxCheckpointChunks = MaxAttachmentSize / AttachmentChunkSize
)

// MarshalBinary encodes c.
func (c *AttachmentCheckpoint) MarshalBinary() ([]byte, error) {
	if len(c.digestState) > maxDigestStateLen {
		return nil, errors.New("marshal attachment checkpoint: no digest state")
	}
	b := make([]byte, 0, checkpointFixedLen+len(c.digestState))
	b = append(b, checkpointVersion)
	b = append(b, c.Key[:]...)
	b = append(b, c.Nonce[:]...)
	b = binary.BigEndian.AppendUint64(b, c.Chunks)
	if c.hasInflight {
		b = append(b, 1)
		b = append(b, c.inflight[:]...)
	} else {
		b = append(b, make([]byte, 1+sha256.Size)...)
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(c.digestState)))
	return append(b, c.digestState...), nil
}

// UnmarshalBinary decodes a checkpoint encoded by MarshalBinary.
func (c *AttachmentCheckpoint) UnmarshalBinary(b []byte) error {
	if len(b) < checkpointFixedLen || b[0] != checkpointVersion {
		return fmt.Errorf("unmarshal attachment checkpoint: bad header: %w", ErrMalformed)
	}
	chunks := binary.BigEndian.Uint64(b[49:57])
	flag, hash := b[57], [sha256.Size]byte(b[58:90])
	n := int(binary.BigEndian.Uint16(b[90:92]))
	if chunks > maxCheckpointChunks || n > maxDigestStateLen || len(b) != checkpointFixedLen+n {
		return fmt.Errorf("unmarshal attachment checkpoint: bad length: %w", ErrMalformed)
	}
	if flag > 1 || (flag == 0 && hash != [sha256.Size]byte{}) {
		return fmt.Errorf("unmarshal attachment checkpoint: bad in-flight chunk: %w", ErrMalformed)
	}
	st := b[checkpointFixedLen:]
	if err := sha256.New().(encoding.BinaryUnmarshaler).UnmarshalBinary(st); err != nil {
		return fmt.Errorf("unmarshal attachment checkpoint: digest state: %w", ErrMalformed)
	}
	copy(c.Key[:], b[1:33])
	copy(c.Nonce[:], b[33:49])
	c.Chunks = chunks
	c.inflight, c.hasInflight = hash, flag == 1
	c.digestState = append([]byte(nil), st...)
	return nil
}

// ResumeAttachmentWriter continues the upload recorded by c: the caller
// writes the plaintext from c.PlaintextOffset() and the writer writes to dst
// the blob's bytes from c.CiphertextOffset(), identical to those an
// uninterrupted writer would have produced. Pointer's digest covers the
// whole blob. The plaintext must be unchanged: if the chunk whose write
// failed differs, Write or Close fails rather than reuse its nonce.
func ResumeAttachmentWriter(dst io.Writer, c *AttachmentCheckpoint) (*AttachmentWriter, error) {
	if c.Chunks > maxCheckpointChunks {
		return nil, errors.New("resume attachment: chunk count out of range")
	}
	w := &AttachmentWriter{dst: dst, digest: sha256.New(), key: c.Key, header: c.Nonce, chunk: c.Chunks,
		resumeChunk: c.Chunks, inflight: c.inflight, hasInflight: c.hasInflight}
	if err := w.digest.(encoding.BinaryUnmarshaler).UnmarshalBinary(c.digestState); err != nil {
		return nil, fmt.Errorf("resume attachment: digest state: %v", err)
	}
	w.init()
	w.size = c.PlaintextOffset()
	return w, nil
}

// An AttachmentReader decrypts a blob read as a stream. It authenticates
// every chunk before returning its plaintext, and at the end checks that the
// blob has exactly the pointer's length and digest; only then does Read
// return io.EOF. It is not safe for concurrent use.
type AttachmentReader struct {
	src    io.Reader
	ptr    AttachmentPointer
	aead   cipher.AEAD
	nonce  [12]byte
	digest hash.Hash
	buf    []byte
	plain  []byte // decrypted, not yet returned
	chunk  int64  // next chunk to read
	n      int64  // chunks in the blob
	err    error  // sticky; io.EOF at the end
}

var _ io.Reader = (*AttachmentReader)(nil)

// NewAttachmentReader returns a reader of the plaintext of the blob read
// from src, described by p.
func NewAttachmentReader(src io.Reader, p AttachmentPointer) (*AttachmentReader, error) {
	if p.Size < 0 || p.Size > MaxAttachmentSize {
		return nil, fmt.Errorf("open attachment: size %d out of range", p.Size)
	}
	return &AttachmentReader{src: src, ptr: p, digest: sha256.New(), n: attachmentChunks(p.Size)}, nil
}

// Read implements io.Reader.
func (r *AttachmentReader) Read(p []byte) (int, error) {
	for len(r.plain) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		r.err = r.next()
	}
	n := copy(p, r.plain)
	r.plain = r.plain[n:]
	return n, nil
}

// next reads the header or the next chunk, or checks the end of the blob.
func (r *AttachmentReader) next() error {
	if r.aead == nil {
		var hdr [attachmentHeaderLen]byte
		if _, err := io.ReadFull(r.src, hdr[:]); err != nil {
			return readErr("header", err)
		}
		r.digest.Write(hdr[:])
		a, err := openAttachmentHeader(&r.ptr.Key, &hdr)
		if err != nil {
			return err
		}
		r.aead = a
		r.buf = make([]byte, attachmentSealedLen)
		return nil
	}
	if r.chunk == r.n {
		var one [1]byte
		if n, _ := io.ReadFull(r.src, one[:]); n != 0 {
			return fmt.Errorf("read attachment: %w: trailing data", ErrAttachmentCorrupt)
		}
		var sum [sha256.Size]byte
		if subtle.ConstantTimeCompare(r.digest.Sum(sum[:0]), r.ptr.Digest[:]) != 1 {
			return fmt.Errorf("read attachment: %w: digest mismatch", ErrAttachmentCorrupt)
		}
		return io.EOF
	}
	last := r.chunk == r.n-1
	l := attachmentSealedLen
	if last {
		l = int(r.ptr.Size-r.chunk*AttachmentChunkSize) + attachmentTagLen
	}
	if _, err := io.ReadFull(r.src, r.buf[:l]); err != nil {
		return readErr(fmt.Sprintf("chunk %d", r.chunk), err)
	}
	r.digest.Write(r.buf[:l])
	setChunkNonce(&r.nonce, uint64(r.chunk), last)
	pt, err := r.aead.Open(r.buf[:0], r.nonce[:], r.buf[:l], nil)
	if err != nil {
		return fmt.Errorf("read attachment chunk %d: %w", r.chunk, ErrAttachmentCorrupt)
	}
	r.plain = pt
	r.chunk++
	return nil
}

func readErr(what string, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("read attachment %s: %w", what, ErrAttachmentTruncated)
	}
	return fmt.Errorf("read attachment %s: %w", what, err)
}

// An AttachmentReaderAt decrypts a blob with random access: it implements
// io.ReaderAt, io.Reader and io.Seeker over the plaintext. Opening it
// authenticates the last chunk, so truncation is detected before any read;
// every read authenticates the chunks it touches. Reads do not check the
// digest, which needs the whole blob; VerifyDigest does. It is safe for
// concurrent use.
type AttachmentReaderAt struct {
	src    io.ReaderAt
	size   int64
	n      int64
	aead   cipher.AEAD
	digest [sha256.Size]byte

	mu     sync.Mutex // mu protects the fields below
	pos    int64      // Read/Seek position
	cached int64      // index of the chunk in plain, or -1
	buf    []byte
	plain  []byte
	nonce  [12]byte
}

var (
	_ io.ReaderAt   = (*AttachmentReaderAt)(nil)
	_ io.ReadSeeker = (*AttachmentReaderAt)(nil)
)

// NewAttachmentReaderAt opens the blob in src described by p. It reads the
// header and the last chunk, and checks that src ends where p says.
func NewAttachmentReaderAt(src io.ReaderAt, p AttachmentPointer) (*AttachmentReaderAt, error) {
	if p.Size < 0 || p.Size > MaxAttachmentSize {
		return nil, fmt.Errorf("open attachment: size %d out of range", p.Size)
	}
	var hdr [attachmentHeaderLen]byte
	if n, err := src.ReadAt(hdr[:], 0); n != len(hdr) {
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return nil, readErr("header", err)
	}
	a, err := openAttachmentHeader(&p.Key, &hdr)
	if err != nil {
		return nil, err
	}
	r := &AttachmentReaderAt{src: src, size: p.Size, n: attachmentChunks(p.Size), aead: a, digest: p.Digest, cached: -1, buf: make([]byte, attachmentSealedLen)}
	var one [1]byte
	if n, _ := src.ReadAt(one[:], p.CiphertextSize()); n != 0 {
		return nil, fmt.Errorf("open attachment: %w: trailing data", ErrAttachmentCorrupt)
	}
	if err := r.load(r.n - 1); err != nil {
		return nil, err
	}
	return r, nil
}

// Size returns the plaintext length.
func (r *AttachmentReaderAt) Size() int64 { return r.size }

// load decrypts chunk i into r.plain. r.mu must be held.
func (r *AttachmentReaderAt) load(i int64) error {
	if r.cached == i {
		return nil
	}
	r.cached = -1
	last := i == r.n-1
	l := attachmentSealedLen
	if last {
		l = int(r.size-i*AttachmentChunkSize) + attachmentTagLen
	}
	off := attachmentHeaderLen + i*attachmentSealedLen
	if n, err := r.src.ReadAt(r.buf[:l], off); n != l {
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return readErr(fmt.Sprintf("chunk %d", i), err)
	}
	setChunkNonce(&r.nonce, uint64(i), last)
	pt, err := r.aead.Open(r.buf[:0], r.nonce[:], r.buf[:l], nil)
	if err != nil {
		return fmt.Errorf("read attachment chunk %d: %w", i, ErrAttachmentCorrupt)
	}
	r.plain = pt
	r.cached = i
	return nil
}

// VerifyDigest reads the whole blob and checks it against the pointer's
// digest, for a client that keeps the blob and reads it at random later. It
// returns an error wrapping ErrAttachmentCorrupt on a mismatch.
func (r *AttachmentReaderAt) VerifyDigest() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cached = -1 // buf is reused below
	h := sha256.New()
	total := attachmentHeaderLen + r.size + attachmentTagLen*r.n
	for off := int64(0); off < total; {
		l := int(min(int64(len(r.buf)), total-off))
		if n, err := r.src.ReadAt(r.buf[:l], off); n != l {
			if err == nil {
				err = io.ErrUnexpectedEOF
			}
			return readErr("blob", err)
		}
		h.Write(r.buf[:l])
		off += int64(l)
	}
	var sum [sha256.Size]byte
	if subtle.ConstantTimeCompare(h.Sum(sum[:0]), r.digest[:]) != 1 {
		return fmt.Errorf("verify attachment: %w: digest mismatch", ErrAttachmentCorrupt)
	}
	return nil
}

// ReadAt implements io.ReaderAt.
func (r *AttachmentReaderAt) ReadAt(p []byte, off int64) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.readAt(p, off)
}

func (r *AttachmentReaderAt) readAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("read attachment: negative offset")
	}
	if off >= r.size {
		return 0, io.EOF
	}
	total := 0
	for len(p) > 0 && off < r.size {
		i := off / AttachmentChunkSize
		if err := r.load(i); err != nil {
			return total, err
		}
		c := copy(p, r.plain[off-i*AttachmentChunkSize:])
		p = p[c:]
		off += int64(c)
		total += c
	}
	if len(p) > 0 {
		return total, io.EOF
	}
	return total, nil
}

// Read implements io.Reader.
func (r *AttachmentReaderAt) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(p) == 0 {
		return 0, nil
	}
	n, err := r.readAt(p, r.pos)
	r.pos += int64(n)
	if n > 0 && err == io.EOF {
		err = nil
	}
	return n, err
}

// Seek implements io.Seeker over the plaintext.
func (r *AttachmentReaderAt) Seek(offset int64, whence int) (int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += r.pos
	case io.SeekEnd:
		offset += r.size
	default:
		return r.pos, errors.New("seek attachment: bad whence")
	}
	if offset < 0 {
		return r.pos, errors.New("seek attachment: negative position")
	}
	r.pos = offset
	return offset, nil
}
