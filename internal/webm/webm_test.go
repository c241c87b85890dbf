package webm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/ferry-im/ferry/internal/voice"
)

// el encodes one EBML element; size -1 writes the unknown size of a live
// recording.
func el(id uint32, size int, data ...[]byte) []byte {
	var b []byte
	switch {
	case id > 0xffffff:
		b = binary.BigEndian.AppendUint32(b, id)
	case id > 0xffff:
		b = append(b, byte(id>>16), byte(id>>8), byte(id))
	case id > 0xff:
		b = binary.BigEndian.AppendUint16(b, uint16(id))
	default:
		b = append(b, byte(id))
	}
	body := bytes.Join(data, nil)
	if size < 0 {
		b = append(b, 0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
	} else {
		b = append(b, 0x08, 0, 0, 0, 0, 0, 0, 0) // 8-byte size
		binary.BigEndian.PutUint64(b[len(b)-8:], uint64(len(body)))
		b[len(b)-8] |= 0x01
	}
	return append(b, body...)
}

// recording is a WebM file as MediaRecorder writes one: a live segment and
// cluster, one Opus track, n SimpleBlocks of 20 ms CELT packets.
func recording(n int, withHead bool) []byte {
	head := append([]byte("OpusHead"), 1, 1, 0x38, 0x01, 0x80, 0xbb, 0, 0, 0, 0, 0)
	entry := [][]byte{el(idTrackNumber, 0, []byte{1}), el(idCodecID, 0, []byte("A_OPUS")), el(idAudio, 0, el(idChannels, 0, []byte{1}))}
	if withHead {
		entry = append(entry, el(idCodecPrivate, 0, head))
	}
	var blocks [][]byte
	for i := range n {
		pkt := []byte{0xf8, byte(i), 0xaa, 0xbb} // config 31 (CELT 20 ms), one frame
		if i%3 == 0 {
			pkt = append(pkt, bytes.Repeat([]byte{0x55}, 300)...) // louder: a longer packet
		}
		blocks = append(blocks, el(idSimpleBlock, 0, []byte{0x81, 0, byte(i), 0x80}, pkt))
	}
	return bytes.Join([][]byte{
		el(idEBML, 0, []byte{0x42, 0x82, 0x84, 'w', 'e', 'b', 'm'}),
		el(idSegment, -1,
			el(idTracks, 0, el(idTrackEntry, 0, entry...)),
			el(idCluster, -1, append([][]byte{{0xe7, 0x81, 0x00}}, blocks...)...)),
	}, nil)
}

// TestToOgg: the Ogg Opus made from a recording is a voice note Ferry
// reads, with the duration of its packets.
func TestToOgg(t *testing.T) {
	for _, head := range []bool{true, false} {
		ogg, err := ToOgg(recording(150, head))
		if err != nil {
			t.Fatal(err)
		}
		note, err := voice.Parse(bytes.NewReader(ogg))
		if err != nil {
			t.Fatalf("voice.Parse: %v", err)
		}
		want := 3*time.Second - 312*time.Second/48000*time.Duration(boolInt(head))
		if d := note.Duration; d < want-20*time.Millisecond || d > 3*time.Second {
			t.Errorf("head %v: duration %v, want about %v", head, d, want)
		}
		if note.Packets != 150 {
			t.Errorf("packets %d, want 150", note.Packets)
		}
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestToOggRefuses(t *testing.T) {
	good := recording(3, true)
	for _, tt := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"cut", good[:len(good)-3]},
		{"no packets", recording(0, true)},
		{"not opus", bytes.Replace(good, []byte("A_OPUS"), []byte("A_VORB"), 1)},
		{"zero byte id", []byte{0x00, 0x81, 0x00}},
	} {
		if _, err := ToOgg(tt.b); !errors.Is(err, ErrNotOpus) {
			t.Errorf("%s: got %v, want ErrNotOpus", tt.name, err)
		}
	}
}

// FuzzToOgg: whatever ToOgg accepts becomes an Ogg Opus stream that
// voice.Parse reads with as many packets.
func FuzzToOgg(f *testing.F) {
	f.Add(recording(3, true))
	f.Add(recording(2, false))
	f.Add(recording(60, true))
	f.Fuzz(func(t *testing.T, b []byte) {
		ogg, err := ToOgg(b)
		if err != nil {
			if !errors.Is(err, ErrNotOpus) {
				t.Fatalf("error %v does not wrap ErrNotOpus", err)
			}
			return
		}
		_, pkts, _ := packets(b)
		if note, err := voice.Parse(bytes.NewReader(ogg)); err == nil && note.Packets != len(pkts) {
			t.Fatalf("voice.Parse read %d packets of %d", note.Packets, len(pkts))
		}
	})
}
