package session

import (
	"bytes"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"sync"
	"testing"
	"testing/iotest"
)

// encryptAttachment encrypts pt with key material from rand, writing in
// pieces of the given size.
func encryptAttachment(t testing.TB, rand io.Reader, pt []byte, piece int) ([]byte, AttachmentPointer) {
	t.Helper()
	var blob bytes.Buffer
	w, err := NewAttachmentWriter(rand, &blob)
	if err != nil {
		t.Fatal(err)
	}
	for p := pt; len(p) > 0; {
		n := min(piece, len(p))
		if m, err := w.Write(p[:n]); err != nil || m != n {
			t.Fatalf("write = %d, %v", m, err)
		}
		p = p[n:]
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	ptr, err := w.Pointer()
	if err != nil {
		t.Fatal(err)
	}
	return blob.Bytes(), ptr
}

func decryptStream(blob []byte, ptr AttachmentPointer) ([]byte, error) {
	r, err := NewAttachmentReader(bytes.NewReader(blob), ptr)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

var attachmentSizes = []int{0, 1, 1000, AttachmentChunkSize - 1, AttachmentChunkSize, AttachmentChunkSize + 1, 2 * AttachmentChunkSize, 3*AttachmentChunkSize + 12345}

func TestAttachmentRoundTrip(t *testing.T) {
	t.Parallel()
	for _, size := range attachmentSizes {
		for _, piece := range []int{1 << 20, 4096, 7777} {
			t.Run(fmt.Sprintf("%d/%d", size, piece), func(t *testing.T) {
				t.Parallel()
				pt := detBytes(fmt.Sprint("pt", size), size)
				blob, ptr := encryptAttachment(t, extrasDetRand("rt"), pt, piece)
				if int64(len(blob)) != ptr.CiphertextSize() || ptr.Size != int64(size) {
					t.Fatalf("blob %d bytes, size %d; want %d, %d", len(blob), ptr.Size, ptr.CiphertextSize(), size)
				}
				if ptr.Digest != sha256.Sum256(blob) {
					t.Error("digest is not SHA-256 of the blob")
				}
				got, err := decryptStream(blob, ptr)
				if err != nil || !bytes.Equal(got, pt) {
					t.Fatalf("stream decrypt: %v, equal %v", err, bytes.Equal(got, pt))
				}
				got, err = io.ReadAll(iotest.OneByteReader(mustReader(t, blob, ptr)))
				if err != nil || !bytes.Equal(got, pt) {
					t.Fatalf("one-byte stream decrypt: %v", err)
				}
				ra, err := NewAttachmentReaderAt(bytes.NewReader(blob), ptr)
				if err != nil {
					t.Fatal(err)
				}
				if err := iotest.TestReader(ra, pt); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

func mustReader(t testing.TB, blob []byte, ptr AttachmentPointer) *AttachmentReader {
	r, err := NewAttachmentReader(bytes.NewReader(blob), ptr)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestAttachmentSeek(t *testing.T) {
	t.Parallel()
	pt := detBytes("seek", 5*AttachmentChunkSize+100)
	blob, ptr := encryptAttachment(t, extrasDetRand("seek"), pt, 1<<20)
	r, err := NewAttachmentReaderAt(bytes.NewReader(blob), ptr)
	if err != nil {
		t.Fatal(err)
	}
	var pos int64
	for _, c := range []struct {
		off    int64
		whence int
	}{
		{-50, io.SeekEnd},
		{AttachmentChunkSize - 3, io.SeekStart},
		{2 * AttachmentChunkSize, io.SeekCurrent},
		{0, io.SeekStart},
	} {
		want := c.off
		switch c.whence {
		case io.SeekCurrent:
			want += pos
		case io.SeekEnd:
			want += int64(len(pt))
		}
		got, err := r.Seek(c.off, c.whence)
		if err != nil || got != want {
			t.Fatalf("seek(%d, %d) = %d, %v, want %d", c.off, c.whence, got, err, want)
		}
		buf := make([]byte, 10)
		n, _ := io.ReadFull(r, buf)
		if !bytes.Equal(buf[:n], pt[got:min(got+10, int64(len(pt)))]) {
			t.Errorf("read at %d: wrong bytes", got)
		}
		pos = got + int64(n)
	}
	if _, err := r.Seek(-1, io.SeekStart); err == nil {
		t.Error("negative seek accepted")
	}
	// Concurrent ReadAt (run with -race).
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			buf := make([]byte, 3000)
			for i := range 20 {
				off := int64((g*7919 + i*104729) % (len(pt) - len(buf)))
				if _, err := r.ReadAt(buf, off); err != nil || !bytes.Equal(buf, pt[off:off+int64(len(buf))]) {
					t.Errorf("concurrent ReadAt(%d): %v", off, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// chunkAt returns the bounds of sealed chunk i in a blob.
func chunkAt(blob []byte, i int) (int, int) {
	start := attachmentHeaderLen + i*attachmentSealedLen
	return start, min(start+attachmentSealedLen, len(blob))
}

func TestAttachmentTamper(t *testing.T) {
	t.Parallel()
	pt := detBytes("tamper", 3*AttachmentChunkSize+10)
	blob, ptr := encryptAttachment(t, extrasDetRand("tamper"), pt, 1<<20)
	cp := func() []byte { return append([]byte(nil), blob...) }
	s0, e0 := chunkAt(blob, 0)
	s1, e1 := chunkAt(blob, 1)
	_, e2 := chunkAt(blob, 2)
	swapped := cp()
	copy(swapped[s0:e0], blob[s1:e1])
	copy(swapped[s1:e1], blob[s0:e0])
	dup := cp()
	copy(dup[s1:e1], blob[s0:e0])
	cutPtr := ptr
	cutPtr.Size = 3 * AttachmentChunkSize // claims the blob ends after chunk 2
	cutPtr.Digest = sha256.Sum256(blob[:e2])
	wrongKey := ptr
	wrongKey.Key[0] ^= 1

	for _, c := range []struct {
		name string
		blob []byte
		ptr  AttachmentPointer
		want error
	}{
		{"last chunk missing", blob[:e2], ptr, ErrAttachmentTruncated},
		{"cut mid-chunk", blob[:s1+100], ptr, ErrAttachmentTruncated},
		{"header only", blob[:attachmentHeaderLen], ptr, ErrAttachmentTruncated},
		{"nonce only", blob[:attachmentNonceLen], ptr, ErrAttachmentTruncated},
		{"empty", nil, ptr, ErrAttachmentTruncated},
		{"last chunk missing, size forged", blob[:e2], cutPtr, ErrAttachmentCorrupt},
		{"chunks swapped", swapped, ptr, ErrAttachmentCorrupt},
		{"chunk duplicated", dup, ptr, ErrAttachmentCorrupt},
		{"trailing byte", append(cp(), 0), ptr, ErrAttachmentCorrupt},
		{"wrong key", blob, wrongKey, ErrAttachmentCorrupt},
		{"commitment changed", func() []byte { b := cp(); b[attachmentNonceLen+5] ^= 1; return b }(), ptr, ErrAttachmentCorrupt},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			if _, err := decryptStream(c.blob, c.ptr); !errors.Is(err, c.want) {
				t.Errorf("stream: got %v, want %v", err, c.want)
			}
			if c.name == "chunks swapped" || c.name == "chunk duplicated" {
				// Opening checks only the last chunk; reading the bad ones fails.
				r, err := NewAttachmentReaderAt(bytes.NewReader(c.blob), c.ptr)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := io.ReadAll(r); !errors.Is(err, c.want) {
					t.Errorf("readerat: got %v, want %v", err, c.want)
				}
				return
			}
			if _, err := NewAttachmentReaderAt(bytes.NewReader(c.blob), c.ptr); !errors.Is(err, c.want) {
				t.Errorf("readerat open: got %v, want %v", err, c.want)
			}
		})
	}
	t.Run("every byte", func(t *testing.T) {
		t.Parallel()
		small := detBytes("flip", 300)
		sb, sp := encryptAttachment(t, extrasDetRand("flip"), small, 1000)
		for i := range sb {
			b := append([]byte(nil), sb...)
			b[i] ^= 0x40
			if _, err := decryptStream(b, sp); err == nil {
				t.Fatalf("flip at byte %d accepted", i)
			}
		}
	})
	t.Run("digest", func(t *testing.T) {
		t.Parallel()
		p := ptr
		p.Digest[31] ^= 1
		ra, err := NewAttachmentReaderAt(bytes.NewReader(blob), p)
		if err != nil {
			t.Fatal(err)
		}
		if err := ra.VerifyDigest(); !errors.Is(err, ErrAttachmentCorrupt) {
			t.Errorf("VerifyDigest with a wrong digest: got %v, want ErrAttachmentCorrupt", err)
		}
		ra, _ = NewAttachmentReaderAt(bytes.NewReader(blob), ptr)
		if err := ra.VerifyDigest(); err != nil {
			t.Errorf("VerifyDigest: %v", err)
		}
		if err := iotest.TestReader(ra, pt); err != nil {
			t.Errorf("reads after VerifyDigest: %v", err)
		}
		r := mustReader(t, blob, p)
		got, err := io.ReadAll(r)
		if !errors.Is(err, ErrAttachmentCorrupt) {
			t.Errorf("digest mismatch: got %v, want ErrAttachmentCorrupt", err)
		}
		if !bytes.Equal(got, pt) {
			t.Error("authenticated chunks not returned before the digest check")
		}
	})
}

// failingWriter accepts limit bytes, then fails.
type failingWriter struct {
	w     bytes.Buffer
	limit int
}

func (f *failingWriter) Write(p []byte) (int, error) {
	if f.w.Len()+len(p) > f.limit {
		n := f.limit - f.w.Len()
		f.w.Write(p[:n])
		return n, errors.New("connection reset")
	}
	return f.w.Write(p)
}

// interruptedUpload uploads pt (with randomness from label) through a
// connection that drops after cut bytes and returns the writer's
// checkpoint after a round trip through its encoding, as the client's
// store keeps it. It fails t unless the upload failed and the checkpoint
// lies within the bytes uploaded.
func interruptedUpload(t *testing.T, label string, pt []byte, cut int) *AttachmentCheckpoint {
	t.Helper()
	fw := &failingWriter{limit: cut}
	w, err := NewAttachmentWriter(extrasDetRand(label), fw)
	if err != nil {
		t.Fatal(err)
	}
	_, err1 := w.Write(pt)
	err2 := w.Close()
	if err1 == nil && err2 == nil {
		t.Fatal("upload did not fail")
	}
	cp, err := w.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	enc, err := cp.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var restored AttachmentCheckpoint
	if err := restored.UnmarshalBinary(enc); err != nil {
		t.Fatal(err)
	}
	if int64(fw.w.Len()) < restored.CiphertextOffset() {
		t.Fatalf("checkpoint at %d beyond the %d bytes uploaded", restored.CiphertextOffset(), fw.w.Len())
	}
	return &restored
}

func TestAttachmentResume(t *testing.T) {
	t.Parallel()
	pt := detBytes("resume", 4*AttachmentChunkSize+999)
	full, fullPtr := encryptAttachment(t, extrasDetRand("resume"), pt, 1<<20)
	for _, cut := range []int{attachmentHeaderLen, attachmentHeaderLen + attachmentSealedLen, attachmentHeaderLen + 2*attachmentSealedLen + 5000, len(full) - 1} {
		t.Run(fmt.Sprint(cut), func(t *testing.T) {
			t.Parallel()
			restored := interruptedUpload(t, "resume", pt, cut)
			var rest bytes.Buffer
			rw, err := ResumeAttachmentWriter(&rest, restored)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := rw.Write(pt[restored.PlaintextOffset():]); err != nil {
				t.Fatal(err)
			}
			if err := rw.Close(); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(rest.Bytes(), full[restored.CiphertextOffset():]) {
				t.Error("resumed bytes differ from an uninterrupted upload")
			}
			if p, err := rw.Pointer(); err != nil || p != fullPtr {
				t.Errorf("resumed pointer %+v, %v; want %+v", p, err, fullPtr)
			}
		})
	}
}

func TestAttachmentWriterAllocs(t *testing.T) {
	w, err := NewAttachmentWriter(extrasDetRand("allocs"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, AttachmentChunkSize)
	allocs := testing.AllocsPerRun(50, func() { w.Write(chunk) })
	if allocs != 0 {
		t.Errorf("%v allocations per chunk written, want 0", allocs)
	}
	pt := detBytes("allocs", 8*AttachmentChunkSize)
	blob, ptr := encryptAttachment(t, extrasDetRand("allocs"), pt, 1<<20)
	r, err := NewAttachmentReaderAt(bytes.NewReader(blob), ptr)
	if err != nil {
		t.Fatal(err)
	}
	i := 0
	allocs = testing.AllocsPerRun(50, func() {
		r.ReadAt(chunk, int64(i%8)*AttachmentChunkSize)
		i++
	})
	if allocs != 0 {
		t.Errorf("%v allocations per chunk read, want 0", allocs)
	}
}

func TestAttachmentWriterMisuse(t *testing.T) {
	t.Parallel()
	var blob bytes.Buffer
	w, _ := NewAttachmentWriter(extrasDetRand("misuse"), &blob)
	if _, err := w.Pointer(); err == nil {
		t.Error("pointer before close")
	}
	w.Close()
	if _, err := w.Write([]byte("x")); err == nil {
		t.Error("write after close accepted")
	}
	if _, err := w.Checkpoint(); err == nil {
		t.Error("checkpoint after close accepted")
	}
	if _, err := NewAttachmentWriter(bytes.NewReader(make([]byte, 40)), &blob); err == nil {
		t.Error("short rand accepted")
	}
}

func TestAttachmentPointerEncoding(t *testing.T) {
	t.Parallel()
	p := AttachmentPointer{Size: 123456}
	copy(p.Key[:], detBytes("ptr key", 32))
	copy(p.Digest[:], detBytes("ptr digest", 32))
	b, err := p.MarshalBinary()
	if err != nil || len(b) != attachmentPointerLen {
		t.Fatalf("marshal: %d bytes, %v", len(b), err)
	}
	var q AttachmentPointer
	if err := q.UnmarshalBinary(b); err != nil || q != p {
		t.Fatalf("round trip: %+v, %v", q, err)
	}
	mut := func(i int, v byte) []byte { c := append([]byte(nil), b...); c[i] = v; return c }
	for _, c := range []struct {
		name string
		b    []byte
	}{
		{"short", b[:76]},
		{"long", append(append([]byte(nil), b...), 0)},
		{"version", mut(0, 2)},
		{"size too large", mut(65, 1)},
		{"chunk size", mut(74, 0)},
	} {
		if err := q.UnmarshalBinary(c.b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: got %v, want ErrMalformed", c.name, err)
		}
	}
	if _, err := (&AttachmentPointer{Size: -1}).MarshalBinary(); err == nil {
		t.Error("negative size marshalled")
	}
}

// attachmentVector is one case of testdata/extras-attachment.json.
type attachmentVector struct {
	Name          string `json:"name"`
	RandSeed      string `json:"rand_seed"`      // extrasDetRand seed of key (32) then nonce (16)
	PlaintextSeed string `json:"plaintext_seed"` // plaintext = first plaintext_len bytes of extrasDetRand(plaintext_seed)
	PlaintextLen  int    `json:"plaintext_len"`
	Key           string `json:"key"`
	Nonce         string `json:"nonce"`
	PayloadKey    string `json:"payload_key"`
	Commitment    string `json:"commitment"`
	Pointer       string `json:"pointer"`
	BlobLen       int64  `json:"blob_len"`
	BlobSHA256    string `json:"blob_sha256"`
	Blob          string `json:"blob,omitempty"` // whole blob when short
}

type attachmentVectors struct {
	Description string             `json:"description"`
	Cases       []attachmentVector `json:"cases"`
}

func genAttachmentVectors(t *testing.T) attachmentVectors {
	v := attachmentVectors{Description: "Attachment blobs (docs/protocol.md section 3.3). Regenerate: go test ./session -run ExtrasVectors -update"}
	for _, size := range []int{0, 1, 1000, AttachmentChunkSize, AttachmentChunkSize + 1, 2*AttachmentChunkSize + 777} {
		name := fmt.Sprintf("size %d", size)
		pt := detBytes("attachment plaintext", size)
		blob, ptr := encryptAttachment(t, extrasDetRand("attachment "+name), pt, 1<<20)
		pb, _ := ptr.MarshalBinary()
		nonce := blob[:attachmentNonceLen]
		okm, _ := hkdf.Key(sha256.New, ptr.Key[:], nonce, attachmentInfo, 64)
		c := attachmentVector{
			Name: name, RandSeed: "attachment " + name, PlaintextSeed: "attachment plaintext", PlaintextLen: size,
			Key: hex.EncodeToString(ptr.Key[:]), Nonce: hex.EncodeToString(nonce), PayloadKey: hex.EncodeToString(okm[:32]),
			Commitment: hex.EncodeToString(okm[32:]),
			Pointer:    hex.EncodeToString(pb), BlobLen: int64(len(blob)), BlobSHA256: hex.EncodeToString(ptr.Digest[:]),
		}
		if len(blob) <= 2048 {
			c.Blob = hex.EncodeToString(blob)
		}
		v.Cases = append(v.Cases, c)
	}
	return v
}

func verifyAttachmentVectors(t *testing.T, v attachmentVectors) {
	for _, c := range v.Cases {
		var ptr AttachmentPointer
		if err := ptr.UnmarshalBinary(unhex(t, c.Pointer)); err != nil {
			t.Fatalf("%s: %v", c.Name, err)
		}
		if hex.EncodeToString(ptr.Key[:]) != c.Key || ptr.CiphertextSize() != c.BlobLen {
			t.Errorf("%s: pointer key/size do not match the vector", c.Name)
		}
		var blob []byte
		if c.Blob != "" {
			blob = unhex(t, c.Blob)
		} else {
			// Rebuild the blob from the vector's key, nonce and commitment.
			cp := &AttachmentCheckpoint{Key: ptr.Key, Nonce: [16]byte(unhex(t, c.Nonce))}
			hdr := append(unhex(t, c.Nonce), unhex(t, c.Commitment)...)
			h := sha256.New()
			h.Write(hdr)
			cp.digestState, _ = h.(encoding.BinaryMarshaler).MarshalBinary()
			var buf bytes.Buffer
			buf.Write(hdr)
			w, err := ResumeAttachmentWriter(&buf, cp)
			if err != nil {
				t.Fatal(err)
			}
			w.Write(detBytes(c.PlaintextSeed, c.PlaintextLen))
			w.Close()
			blob = buf.Bytes()
		}
		if got := sha256.Sum256(blob); hex.EncodeToString(got[:]) != c.BlobSHA256 {
			t.Errorf("%s: blob sha256 %x, want %s", c.Name, got, c.BlobSHA256)
		}
		got, err := decryptStream(blob, ptr)
		if err != nil || !bytes.Equal(got, detBytes(c.PlaintextSeed, c.PlaintextLen)) {
			t.Errorf("%s: decrypt: %v", c.Name, err)
		}
	}
}

func FuzzAttachmentPointer(f *testing.F) {
	for _, c := range loadExtrasVectors[attachmentVectors](f, "attachment").Cases {
		f.Add(unhex(f, c.Pointer))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var p AttachmentPointer
		if err := p.UnmarshalBinary(b); err != nil {
			return
		}
		got, err := p.MarshalBinary()
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("round trip: %x -> %x, %v", b, got, err)
		}
	})
}

func FuzzAttachmentCheckpoint(f *testing.F) {
	w, _ := NewAttachmentWriter(extrasDetRand("fuzz checkpoint"), io.Discard)
	w.Write(make([]byte, 3*AttachmentChunkSize))
	cp, _ := w.Checkpoint()
	b, _ := cp.MarshalBinary()
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		var c AttachmentCheckpoint
		if err := c.UnmarshalBinary(b); err != nil {
			return
		}
		got, err := c.MarshalBinary()
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("round trip: %x -> %x, %v", b, got, err)
		}
		if _, err := ResumeAttachmentWriter(io.Discard, &c); err != nil {
			t.Fatalf("resume from a parsed checkpoint: %v", err)
		}
	})
}

// FuzzAttachmentBlob decrypts arbitrary blobs under a fixed pointer: no
// panic, and success only for the genuine blob.
func FuzzAttachmentBlob(f *testing.F) {
	pt := detBytes("fuzz blob", 200)
	blob, ptr := encryptAttachment(f, extrasDetRand("fuzz blob"), pt, 1000)
	f.Add(blob)
	f.Add(blob[:100])
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := decryptStream(b, ptr)
		if err == nil && (!bytes.Equal(b, blob) || !bytes.Equal(got, pt)) {
			t.Fatal("forged blob accepted")
		}
		if r, err := NewAttachmentReaderAt(bytes.NewReader(b), ptr); err == nil {
			io.ReadAll(r)
		}
	})
}

func ExampleNewAttachmentWriter() {
	var blob bytes.Buffer // the upload to the relay's blob store
	w, _ := NewAttachmentWriter(rand.Reader, &blob)
	io.WriteString(w, "a photo of the harbour")
	w.Close()
	ptr, _ := w.Pointer() // goes into the message, inside the session

	r, _ := NewAttachmentReader(&blob, ptr)
	pt, err := io.ReadAll(r)
	fmt.Printf("%q %v %d\n", pt, err, ptr.Size)
	// Output: "a photo of the harbour" <nil> 22
}

func ExampleResumeAttachmentWriter() {
	photo := bytes.Repeat([]byte("harbour "), 40000) // 320,000 bytes: 5 chunks
	upload := &failingWriter{limit: 150000}          // the connection drops
	w, _ := NewAttachmentWriter(rand.Reader, upload)
	_, err := w.Write(photo)
	fmt.Println("upload:", err)

	cp, _ := w.Checkpoint() // kept in the client's store
	fmt.Println("resume at", cp.PlaintextOffset(), cp.CiphertextOffset())

	// Later: the relay keeps the first CiphertextOffset bytes, the rest follows.
	blob := bytes.NewBuffer(upload.w.Bytes()[:cp.CiphertextOffset()])
	rw, _ := ResumeAttachmentWriter(blob, cp)
	rw.Write(photo[cp.PlaintextOffset():])
	rw.Close()
	ptr, _ := rw.Pointer()

	r, _ := NewAttachmentReaderAt(bytes.NewReader(blob.Bytes()), ptr)
	tail := make([]byte, 8)
	r.ReadAt(tail, ptr.Size-8)
	fmt.Printf("%q\n", tail)
	// Output:
	// upload: write attachment chunk 2: connection reset
	// resume at 131072 131152
	// "harbour "
}

// TestAttachmentRandom: random sizes, write pieces and reads, against the
// plaintext.
func TestAttachmentRandom(t *testing.T) {
	t.Parallel()
	rng := mrand.New(mrand.NewPCG(7, 11))
	for i := range 25 {
		size := rng.IntN(5 * AttachmentChunkSize)
		pt := detBytes(fmt.Sprint("random ", i), size)
		blob, ptr := encryptAttachment(t, extrasDetRand(fmt.Sprint("random ", i)), pt, 1+rng.IntN(3*AttachmentChunkSize))
		r, err := NewAttachmentReaderAt(bytes.NewReader(blob), ptr)
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		for range 20 {
			off := rng.Int64N(int64(size) + 1)
			buf := make([]byte, rng.IntN(2*AttachmentChunkSize))
			n, err := r.ReadAt(buf, off)
			want := pt[off:min(off+int64(len(buf)), int64(size))]
			if !bytes.Equal(buf[:n], want) || (n < len(buf) && err != io.EOF) {
				t.Fatalf("size %d: ReadAt(%d bytes, %d) = %d, %v", size, len(buf), off, n, err)
			}
		}
		if got, err := decryptStream(blob, ptr); err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("size %d: stream: %v", size, err)
		}
	}
}

// TestAttachmentResumeChangedSource: when the write of a chunk fails, its
// bytes may already be at the relay under that chunk's nonce; resuming
// with a different plaintext for that chunk must fail rather than seal it
// again under the same key and nonce (review L4). Later chunks, never
// encrypted before, may differ.
func TestAttachmentResumeChangedSource(t *testing.T) {
	t.Parallel()
	pt := detBytes("resume changed", 4*AttachmentChunkSize+999)
	for _, tc := range []struct {
		name   string
		cut    int // bytes the relay accepted
		change int // plaintext offset edited before resuming
		ok     bool
	}{
		{"in-flight chunk changed", attachmentHeaderLen + 2*attachmentSealedLen + 5000, 2*AttachmentChunkSize + 7, false},
		{"last chunk changed", attachmentHeaderLen + 4*attachmentSealedLen + 100, 4*AttachmentChunkSize + 1, false},
		{"later chunk changed", attachmentHeaderLen + 2*attachmentSealedLen + 5000, 3*AttachmentChunkSize + 7, true},
		{"unchanged", attachmentHeaderLen + 2*attachmentSealedLen + 5000, -1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			restored := interruptedUpload(t, "resume changed", pt, tc.cut)
			src := bytes.Clone(pt)
			if tc.change >= 0 {
				src[tc.change] ^= 1
			}
			rw, err := ResumeAttachmentWriter(io.Discard, restored)
			if err != nil {
				t.Fatal(err)
			}
			_, err1 := rw.Write(src[restored.PlaintextOffset():])
			err2 := rw.Close()
			if tc.ok && (err1 != nil || err2 != nil) {
				t.Fatalf("resume failed: %v, %v", err1, err2)
			}
			if !tc.ok && err1 == nil && err2 == nil {
				t.Fatal("resumed with a changed in-flight chunk: its nonce was reused")
			}
		})
	}
}
