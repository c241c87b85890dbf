// Package webm turns the voice notes browsers record into the Ogg Opus
// files Ferry sends: a browser's MediaRecorder gives Opus packets in a
// WebM (Matroska) container, and a voice note is Ogg Opus (RFC 7845,
// docs/client.md section 9). ToOgg takes the Opus packets of the first
// audio track out of the WebM blocks unchanged and writes them as an Ogg
// Opus stream: no audio is decoded or encoded.
//
// It reads only what MediaRecorder writes: EBML elements with known or
// unknown sizes, one Opus track, SimpleBlocks or Blocks without lacing.
// It is not a general Matroska parser, and not a recorder.
package webm

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrNotOpus means the input is not a WebM file with an Opus track that
// ToOgg can read.
var ErrNotOpus = errors.New("not a WebM recording with Opus audio")

// MaxPackets bounds the packets of one note (an hour of 20 ms packets).
const MaxPackets = 180000

// Element ids (Matroska specification, RFC 9559).
const (
	idEBML         = 0x1A45DFA3
	idSegment      = 0x18538067
	idCluster      = 0x1F43B675
	idTracks       = 0x1654AE6B
	idTrackEntry   = 0xAE
	idAudio        = 0xE1
	idBlockGroup   = 0xA0
	idSimpleBlock  = 0xA3
	idBlock        = 0xA1
	idTrackNumber  = 0xD7
	idCodecID      = 0x86
	idCodecPrivate = 0x63A2
	idChannels     = 0x9F
	idCodecDelay   = 0x56AA
)

// transparent elements are masters whose children are read in line, so
// that unknown sizes (a live recording's) need no bookkeeping.
var transparent = map[uint64]bool{idSegment: true, idCluster: true, idTracks: true, idTrackEntry: true, idAudio: true, idBlockGroup: true}

// unknownSize is the all-ones size of a live element.
const unknownSize = ^uint64(0)

// track is what ToOgg learns of the audio track.
type track struct {
	number   uint64
	codec    string
	head     []byte // CodecPrivate: the OpusHead
	channels uint64
	delay    uint64 // CodecDelay, nanoseconds
}

// varint reads an EBML variable-length integer; marker keeps the length
// marker bit (element ids do).
func varint(b []byte, marker bool) (v uint64, n int, err error) {
	if len(b) == 0 || b[0] == 0 {
		return 0, 0, ErrNotOpus
	}
	n = 1
	for b[0]&(0x80>>(n-1)) == 0 {
		n++
	}
	if len(b) < n {
		return 0, 0, ErrNotOpus
	}
	v = uint64(b[0])
	if !marker {
		v &= uint64(0xff >> n)
	}
	all := v == uint64(0xff>>n)
	for _, c := range b[1:n] {
		v = v<<8 | uint64(c)
		all = all && c == 0xff
	}
	if !marker && all {
		return unknownSize, n, nil
	}
	return v, n, nil
}

func uintOf(b []byte) uint64 {
	var v uint64
	for _, c := range b {
		v = v<<8 | uint64(c)
	}
	return v
}

// packets reads the Opus packets of the first audio track of a WebM file.
func packets(b []byte) (*track, [][]byte, error) {
	var tr track
	var pkts [][]byte
	for len(b) > 0 {
		id, n, err := varint(b, true)
		if err != nil {
			return nil, nil, err
		}
		size, m, err := varint(b[n:], false)
		if err != nil {
			return nil, nil, err
		}
		b = b[n+m:]
		if transparent[id] {
			continue
		}
		if size == unknownSize || size > uint64(len(b)) {
			return nil, nil, fmt.Errorf("element %x of %d bytes: %w", id, size, ErrNotOpus)
		}
		data := b[:size]
		b = b[size:]
		if err := tr.element(id, data, &pkts); err != nil {
			return nil, nil, err
		}
	}
	if tr.codec != "A_OPUS" || len(pkts) == 0 {
		return nil, nil, ErrNotOpus
	}
	return &tr, pkts, nil
}

// element takes in one element of interest.
func (tr *track) element(id uint64, data []byte, pkts *[][]byte) error {
	switch id {
	case idTrackNumber:
		if tr.number == 0 {
			tr.number = uintOf(data)
		}
	case idCodecID:
		if tr.codec == "" {
			tr.codec = string(data)
		}
	case idCodecPrivate:
		tr.head = data
	case idChannels:
		tr.channels = uintOf(data)
	case idCodecDelay:
		tr.delay = uintOf(data)
	case idSimpleBlock, idBlock:
		num, n, err := varint(data, false)
		if err != nil || len(data) < n+3 {
			return ErrNotOpus
		}
		if num != tr.number {
			return nil // another track
		}
		if data[n+2]&0x06 != 0 {
			return fmt.Errorf("laced blocks: %w", ErrNotOpus)
		}
		if len(*pkts) >= MaxPackets {
			return fmt.Errorf("more than %d packets: %w", MaxPackets, ErrNotOpus)
		}
		*pkts = append(*pkts, data[n+3:])
	}
	return nil
}

// samples returns the duration of an Opus packet in 48 kHz samples (RFC
// 6716 section 3.1), or 0 if it is malformed.
func samples(p []byte) int {
	if len(p) == 0 {
		return 0
	}
	toc := p[0]
	cfg := toc >> 3
	var frame int // samples at 48 kHz in one frame
	switch {
	case cfg < 12:
		frame = []int{480, 960, 1920, 2880}[cfg%4]
	case cfg < 16:
		frame = []int{480, 960}[cfg%2]
	default:
		frame = []int{120, 240, 480, 960}[cfg%4]
	}
	switch toc & 3 {
	case 0:
		return frame
	case 1, 2:
		return 2 * frame
	}
	if len(p) < 2 {
		return 0
	}
	return int(p[1]&0x3f) * frame
}

// opusHead returns the track's OpusHead, or one made from its channels
// and codec delay when the track has none.
func (tr *track) opusHead() []byte {
	if len(tr.head) >= 19 && string(tr.head[:8]) == "OpusHead" {
		return tr.head
	}
	ch := tr.channels
	if ch == 0 || ch > 2 {
		ch = 1
	}
	skip := tr.delay * 48000 / 1e9
	h := append([]byte("OpusHead"), 1, byte(ch))
	h = binary.LittleEndian.AppendUint16(h, uint16(min(skip, 0xffff)))
	h = binary.LittleEndian.AppendUint32(h, 48000)
	return append(h, 0, 0, 0) // gain 0, mapping family 0
}

// ToOgg turns a WebM recording of Opus audio into an Ogg Opus stream.
func ToOgg(webm []byte) ([]byte, error) {
	tr, pkts, err := packets(webm)
	if err != nil {
		return nil, err
	}
	w := &oggWriter{serial: 0x46657272} // "Ferr"
	w.page([][]byte{tr.opusHead()}, 0, 0x02)
	tags := append([]byte("OpusTags"), 5, 0, 0, 0)
	tags = append(append(tags, "Ferry"...), 0, 0, 0, 0)
	w.page([][]byte{tags}, 0, 0)
	var granule int64
	var page [][]byte
	segs := 0
	for i, p := range pkts {
		if len(p) > 255*250 {
			return nil, fmt.Errorf("an Opus packet of %d bytes: %w", len(p), ErrNotOpus)
		}
		granule += int64(samples(p))
		page = append(page, p)
		segs += len(p)/255 + 1
		last := i == len(pkts)-1
		if last || segs+len(pkts[i+1])/255+1 > 255 || len(page) == 50 {
			flags := byte(0)
			if last {
				flags = 0x04
			}
			w.page(page, granule, flags)
			page, segs = nil, 0
		}
	}
	return w.b, nil
}
