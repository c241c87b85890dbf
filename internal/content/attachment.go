package content

import (
	"encoding/binary"
	"fmt"
	"unicode/utf8"

	"github.com/ferry-im/ferry/session"
)

// Attachment limits.
const (
	MaxTypeLen  = 127      // MIME type bytes
	MaxFileName = 255      // file name bytes
	MaxThumb    = 48 << 10 // thumbnail bytes (a small JPEG)
	MaxWaveform = 255      // waveform samples
)

// Attachment flags.
const (
	// AttachmentVoice marks a voice note: Duration and Waveform follow.
	AttachmentVoice = 0x01
)

// Attachment announces a file: the blob the sender uploaded to the
// recipient's relay (docs/protocol.md 3.3 and 6.13), the key to open it,
// and what the recipient shows before and after downloading it:
//
//	body = n(8) || pointer(77) || blob id(16) || sha256(32) || flags(1)
//	       || typeLen(1) || type || nameLen(1) || name || thumbLen(2) || thumb
//	       || [flags & 1: duration ms(4) || waveLen(1) || waveform]
//
// pointer is session.AttachmentPointer's encoding (key, digest of the
// blob, plaintext size); blob id is the relay's name for the blob
// (wire.BlobID of the uploader's write key); sha256 is the SHA-256 of the
// plaintext file, which the recipient checks after decrypting it. type is
// a MIME type (printable ASCII), name the file's base name (UTF-8, no
// control characters or path separators), thumb a JPEG of at most 48 KiB
// or empty. A voice note adds its duration and a waveform of up to 255
// levels (0-255). Other flag bits are zero.
type Attachment struct {
	N        uint64
	Pointer  session.AttachmentPointer
	Blob     [16]byte
	SHA256   [32]byte
	Type     string
	Name     string
	Thumb    []byte
	Voice    bool
	Duration uint32 // milliseconds, voice notes only
	Waveform []byte // voice notes only
}

var _ Ordered = (*Attachment)(nil)

// Kind returns KindAttachment.
func (*Attachment) Kind() Kind { return KindAttachment }

// Counter returns N.
func (a *Attachment) Counter() uint64 { return a.N }

// ValidName reports whether s may be an attachment's file name.
func ValidName(s string) bool {
	if len(s) > MaxFileName || !utf8.ValidString(s) || s == "." || s == ".." {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == '/' || r == '\\' || (r >= 0x80 && r < 0xa0) {
			return false
		}
	}
	return true
}

func validType(s string) bool {
	if len(s) > MaxTypeLen {
		return false
	}
	for i := range len(s) {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// AppendBody appends the attachment body.
func (a *Attachment) AppendBody(b []byte) ([]byte, error) {
	ptr, err := a.Pointer.MarshalBinary()
	if err != nil || !validType(a.Type) || !ValidName(a.Name) || len(a.Thumb) > MaxThumb ||
		len(a.Waveform) > MaxWaveform || (!a.Voice && (a.Duration != 0 || len(a.Waveform) > 0)) {
		return nil, fmt.Errorf("encode attachment: %w", ErrMalformed)
	}
	b = binary.BigEndian.AppendUint64(b, a.N)
	b = append(b, ptr...)
	b = append(b, a.Blob[:]...)
	b = append(b, a.SHA256[:]...)
	var flags byte
	if a.Voice {
		flags |= AttachmentVoice
	}
	b = append(b, flags, byte(len(a.Type)))
	b = append(b, a.Type...)
	b = append(b, byte(len(a.Name)))
	b = append(b, a.Name...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(a.Thumb)))
	b = append(b, a.Thumb...)
	if a.Voice {
		b = binary.BigEndian.AppendUint32(b, a.Duration)
		b = append(b, byte(len(a.Waveform)))
		b = append(b, a.Waveform...)
	}
	return b, nil
}

// pointerLen is the encoding length of a version 1 attachment pointer.
const pointerLen = 77

func parseAttachment(b []byte) (Body, error) {
	bad := fmt.Errorf("attachment: %w", ErrMalformed)
	r := cursor{b: b}
	a := &Attachment{N: r.u64()}
	ptr := r.next(pointerLen)
	copy(a.Blob[:], r.next(16))
	copy(a.SHA256[:], r.next(32))
	flags := r.u8()
	a.Type = string(r.next(int(r.u8())))
	a.Name = string(r.next(int(r.u8())))
	a.Thumb = append([]byte(nil), r.next(int(r.u16()))...)
	a.Voice = flags&AttachmentVoice != 0
	if a.Voice {
		a.Duration = r.u32()
		a.Waveform = append([]byte(nil), r.next(int(r.u8()))...)
	}
	if r.bad || len(r.b) != 0 || flags&^AttachmentVoice != 0 || !validType(a.Type) || !ValidName(a.Name) || len(a.Thumb) > MaxThumb {
		return nil, bad
	}
	if err := a.Pointer.UnmarshalBinary(ptr); err != nil {
		return nil, bad
	}
	if len(a.Thumb) == 0 {
		a.Thumb = nil
	}
	if len(a.Waveform) == 0 {
		a.Waveform = nil
	}
	return a, nil
}

// cursor reads a body strictly; bad is set by any read past the end.
type cursor struct {
	b   []byte
	bad bool
}

func (r *cursor) next(n int) []byte {
	if r.bad || n > len(r.b) {
		r.bad = true
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *cursor) u8() byte {
	if v := r.next(1); v != nil {
		return v[0]
	}
	return 0
}

func (r *cursor) u16() uint16 {
	if v := r.next(2); v != nil {
		return binary.BigEndian.Uint16(v)
	}
	return 0
}

func (r *cursor) u32() uint32 {
	if v := r.next(4); v != nil {
		return binary.BigEndian.Uint32(v)
	}
	return 0
}

func (r *cursor) u64() uint64 {
	if v := r.next(8); v != nil {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}
