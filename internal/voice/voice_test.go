package voice

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"testing"
	"time"
)

// oggWriter makes Ogg Opus files for the tests: each packet on its own
// page unless asked, with correct CRCs.
type oggWriter struct {
	buf bytes.Buffer
	seq uint32
}

func (w *oggWriter) page(flags byte, granule int64, packets ...[]byte) {
	var lacing, data []byte
	for _, p := range packets {
		n := len(p)
		for n >= 255 {
			lacing = append(lacing, 255)
			n -= 255
		}
		lacing = append(lacing, byte(n))
		data = append(data, p...)
	}
	w.raw(flags, granule, lacing, data)
}

func (w *oggWriter) raw(flags byte, granule int64, lacing, data []byte) {
	h := make([]byte, pageHeaderLen, pageHeaderLen+len(lacing)+len(data))
	copy(h, "OggS")
	h[5] = flags
	binary.LittleEndian.PutUint64(h[6:], uint64(granule))
	binary.LittleEndian.PutUint32(h[14:], 0x1234)
	binary.LittleEndian.PutUint32(h[18:], w.seq)
	w.seq++
	h[26] = byte(len(lacing))
	h = append(append(h, lacing...), data...)
	binary.LittleEndian.PutUint32(h[22:], oggCRC(h))
	w.buf.Write(h)
}

func opusHeadPacket(preSkip uint16) []byte {
	p := append([]byte("OpusHead"), 1, 1)
	p = binary.LittleEndian.AppendUint16(p, preSkip)
	p = binary.LittleEndian.AppendUint32(p, 48000)
	return append(p, 0, 0, 0)
}

// synthetic is a note of n 20 ms CELT packets (TOC config 31, code 0):
// loud ones of 80 bytes while speaking, silent ones of 3 bytes.
func synthetic(n int, speaking func(i int) bool, granule int64) []byte {
	w := &oggWriter{}
	w.page(flagFirst, 0, opusHeadPacket(312))
	w.page(0, 0, []byte("OpusTags\x00\x00\x00\x00\x00\x00\x00\x00"))
	for i := range n {
		size := 3
		if speaking(i) {
			size = 80
		}
		p := make([]byte, size)
		p[0] = 31 << 3
		g := int64(-1)
		if i == n-1 {
			g = granule
		}
		w.page(0, g, p)
	}
	return w.buf.Bytes()
}

func TestRealNote(t *testing.T) {
	b, err := os.ReadFile("testdata/hello.opus")
	if err != nil {
		t.Fatal(err)
	}
	n, err := Parse(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	// opusinfo: playback length 4.768 s, 20 ms packets, mono.
	if d := n.Duration - 4768*time.Millisecond; d < 0 || d >= time.Millisecond || n.Channels != 1 || n.Packets != 239 {
		t.Fatalf("got %v, %d packets, %d channels; want 4.768 s, 239, 1", n.Duration, n.Packets, n.Channels)
	}
	// The last second is silence (sox pad 0 1): its slices are far below
	// the speech's.
	if len(n.Waveform) != Levels {
		t.Fatalf("waveform of %d levels", len(n.Waveform))
	}
	var speech, tail int
	for i, v := range n.Waveform {
		if i < Levels/2 {
			speech = max(speech, int(v))
		}
		if i >= Levels-10 {
			tail = max(tail, int(v))
		}
	}
	if speech != 255 || tail > 40 {
		t.Fatalf("waveform %v: want speech at 255 and a quiet end", n.Waveform)
	}
}

func TestSynthetic(t *testing.T) {
	// 100 packets of 20 ms; speech in the first half only. The granule
	// position ends 1000 samples early (end trimming).
	b := synthetic(100, func(i int) bool { return i < 50 }, 100*960-1000)
	n, err := Parse(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	want := time.Duration(100*960-1000-312) * time.Second / 48000
	if n.Duration != want || n.Packets != 100 {
		t.Fatalf("duration %v, %d packets; want %v, 100", n.Duration, n.Packets, want)
	}
	for i, v := range n.Waveform {
		if (i < Levels/2-1 && v != 255) || (i > Levels/2 && v > 10) {
			t.Fatalf("waveform %v: want 255 then near 0", n.Waveform)
		}
	}
	// Without a granule position, the packets' durations count.
	b = synthetic(10, func(int) bool { return true }, -1)
	if n, err := Parse(bytes.NewReader(b)); err != nil || n.Duration != time.Duration(10*960-312)*time.Second/48000 {
		t.Fatalf("without granule: %v, %v", n, err)
	}
}

func TestPacketDurations(t *testing.T) {
	for _, tc := range []struct {
		p    []byte
		want int
	}{
		{[]byte{0 << 3}, 480},                // SILK 10 ms
		{[]byte{3 << 3}, 2880},               // SILK 60 ms
		{[]byte{13 << 3}, 960},               // hybrid 20 ms
		{[]byte{16 << 3}, 120},               // CELT 2.5 ms
		{[]byte{31<<3 | 1}, 1920},            // two 20 ms frames
		{[]byte{31<<3 | 3, 6}, 5760},         // six 20 ms frames: 120 ms
		{[]byte{}, 0},                        // DTX
		{[]byte{16<<3 | 3, 0x80 | 48}, 5760}, // 48 frames of 2.5 ms (padding bit set)
	} {
		if got, err := packetSamples(tc.p); err != nil || got != tc.want {
			t.Errorf("packetSamples(%x) = %d, %v; want %d", tc.p, got, err, tc.want)
		}
	}
	for _, p := range [][]byte{{31<<3 | 3}, {31<<3 | 3, 0}, {31<<3 | 3, 7}} {
		if _, err := packetSamples(p); !errors.Is(err, ErrNotOpus) {
			t.Errorf("packetSamples(%x): %v, want ErrNotOpus", p, err)
		}
	}
}

// TestLongPacketAcrossPages: a packet of 600 bytes laced over two pages.
func TestLongPacketAcrossPages(t *testing.T) {
	w := &oggWriter{}
	w.page(flagFirst, 0, opusHeadPacket(0))
	w.page(0, 0, []byte("OpusTags"))
	p := make([]byte, 600)
	p[0] = 31 << 3
	w.raw(0, -1, []byte{255, 255}, p[:510])
	w.raw(flagContinued, 960, []byte{90}, p[510:])
	n, err := Parse(bytes.NewReader(w.buf.Bytes()))
	if err != nil || n.Packets != 1 || n.Duration != 20*time.Millisecond {
		t.Fatalf("got %+v, %v; want one 20 ms packet", n, err)
	}
}

func TestRejects(t *testing.T) {
	good := synthetic(5, func(int) bool { return true }, 5*960)
	crc := append([]byte(nil), good...)
	crc[len(crc)-1] ^= 1
	notFirst := append([]byte(nil), good...)
	notFirst[5] = 0
	for name, b := range map[string][]byte{
		"empty":       nil,
		"wav":         []byte("RIFF....WAVEfmt "),
		"bad crc":     crc,
		"truncated":   good[:len(good)-3],
		"not first":   notFirst,
		"no opus":     synthetic(0, nil, 0)[:0],
		"vorbis head": func() []byte { w := &oggWriter{}; w.page(flagFirst, 0, []byte("\x01vorbis...")); return w.buf.Bytes() }(),
	} {
		if n, err := Parse(bytes.NewReader(b)); !errors.Is(err, ErrNotOpus) {
			t.Errorf("%s: got %+v, %v; want ErrNotOpus", name, n, err)
		}
	}
}

// FuzzParse: any input either fails with ErrNotOpus or gives a note
// with a non-negative duration and a full waveform.
func FuzzParse(f *testing.F) {
	if b, err := os.ReadFile("testdata/hello.opus"); err == nil {
		f.Add(b[:min(len(b), 4096)])
	}
	f.Add(synthetic(3, func(i int) bool { return i == 1 }, 3*960))
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := Parse(bytes.NewReader(b))
		if err != nil {
			if !errors.Is(err, ErrNotOpus) || n != nil {
				t.Fatalf("got %v, %v", n, err)
			}
			return
		}
		if n.Duration < 0 || len(n.Waveform) != Levels {
			t.Fatalf("note %+v", n)
		}
	})
}
