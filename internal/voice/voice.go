// Package voice reads voice notes: Ogg Opus files (RFC 3533 pages, RFC
// 7845 encapsulation, RFC 6716 packet TOC), for their duration and a
// waveform the chat shows. It parses the container and each packet's
// table-of-contents byte; it does not decode audio.
//
// The waveform is therefore not the signal's amplitude: no pure-Go Opus
// decoder is at hand, so it is the encoder's bitrate over time, the bytes
// per millisecond of the packets in each slice of the note. Opus spends
// few bytes on silence (a few per packet, or none with DTX) and more on
// speech, so the shape follows where someone speaks and pauses, which is
// what a waveform in a chat is for; loud and quiet speech look alike. The
// quietest slice is drawn as 0 and the busiest as 255.
//
// It is not a player or a recorder (package ferry finds the system's).
package voice

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// ErrNotOpus means the file is not an Ogg Opus stream this parser accepts.
var ErrNotOpus = errors.New("not an Ogg Opus voice note")

// Limits.
const (
	// MaxSize is the largest file Parse reads.
	MaxSize = 64 << 20
	// Levels is the number of waveform samples.
	Levels = 64
)

// Note is what Parse learns of a voice note.
type Note struct {
	// Duration is the playback length: the last page's granule position
	// less the pre-skip, at 48 kHz (RFC 7845 section 4), or, without a
	// usable granule position, the sum of the packets' frame durations.
	Duration time.Duration
	// Packets is the number of audio packets.
	Packets int
	// Waveform has Levels values, 0-255, the relative bitrate of each
	// 1/Levels of the note (the package comment says why).
	Waveform []byte
	// Channels is the channel count from the OpusHead header.
	Channels int
}

// packet is one audio packet: its size and its duration in 48 kHz samples.
type packet struct {
	size    int
	samples int
}

// Parse reads an Ogg Opus stream (the first logical stream; others are
// ignored) and returns its duration and waveform. Pages must carry valid
// CRCs; the OpusHead and OpusTags headers must come first.
func Parse(r io.Reader) (*Note, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxSize {
		return nil, fmt.Errorf("%w: over %d MiB", ErrNotOpus, MaxSize>>20)
	}
	pkts, granule, err := packets(b)
	if err != nil {
		return nil, err
	}
	if len(pkts) < 2 {
		return nil, fmt.Errorf("%w: no OpusHead and OpusTags", ErrNotOpus)
	}
	head, err := parseHead(pkts[0])
	if err != nil {
		return nil, err
	}
	if !bytes.HasPrefix(pkts[1], []byte("OpusTags")) {
		return nil, fmt.Errorf("%w: no OpusTags", ErrNotOpus)
	}
	n := &Note{Channels: head.channels}
	var audio []packet
	total := 0
	for _, p := range pkts[2:] {
		s, err := packetSamples(p)
		if err != nil {
			return nil, err
		}
		audio = append(audio, packet{size: len(p), samples: s})
		total += s
	}
	n.Packets = len(audio)
	samples := total - head.preSkip
	if granule > int64(head.preSkip) && granule <= int64(total) {
		samples = int(granule) - head.preSkip
	}
	n.Duration = time.Duration(max(samples, 0)) * time.Second / 48000
	n.Waveform = waveform(audio, total)
	return n, nil
}

type opusHead struct {
	channels int
	preSkip  int
}

// parseHead reads the identification header (RFC 7845 section 5.1).
func parseHead(p []byte) (opusHead, error) {
	if len(p) < 19 || !bytes.HasPrefix(p, []byte("OpusHead")) {
		return opusHead{}, fmt.Errorf("%w: no OpusHead", ErrNotOpus)
	}
	if p[8]>>4 != 0 || p[9] == 0 {
		return opusHead{}, fmt.Errorf("%w: OpusHead version %d with %d channels", ErrNotOpus, p[8], p[9])
	}
	return opusHead{channels: int(p[9]), preSkip: int(binary.LittleEndian.Uint16(p[10:12]))}, nil
}

// frameSamples is the duration of one frame for each TOC configuration
// (RFC 6716 section 3.1), in 48 kHz samples.
func frameSamples(config byte) int {
	switch {
	case config < 12: // SILK: 10, 20, 40, 60 ms
		return []int{480, 960, 1920, 2880}[config%4]
	case config < 16: // hybrid: 10, 20 ms
		return []int{480, 960}[config%2]
	default: // CELT: 2.5, 5, 10, 20 ms
		return []int{120, 240, 480, 960}[config%4]
	}
}

// packetSamples is an Opus packet's duration from its TOC byte and, for
// code 3, its frame count byte (RFC 6716 section 3.2). An empty packet
// (a lost frame, or DTX) lasts nothing.
func packetSamples(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	toc := p[0]
	frames := 1
	switch toc & 3 {
	case 1, 2:
		frames = 2
	case 3:
		if len(p) < 2 || p[1]&0x3f == 0 {
			return 0, fmt.Errorf("%w: a code 3 packet without its frame count", ErrNotOpus)
		}
		frames = int(p[1] & 0x3f)
	}
	s := frames * frameSamples(toc>>3)
	if s > 5760 { // 120 ms, the most a packet may hold
		return 0, fmt.Errorf("%w: a packet of %d samples", ErrNotOpus, s)
	}
	return s, nil
}

// waveform spreads the packets over Levels slices of the note by time and
// returns each slice's bytes per sample, scaled so the largest is 255.
func waveform(audio []packet, total int) []byte {
	if total == 0 {
		return make([]byte, Levels)
	}
	var bytesIn, samplesIn [Levels]float64
	at := 0
	for _, p := range audio {
		if p.samples == 0 {
			continue
		}
		// A packet may straddle slices; give each its share.
		for s := at; s < at+p.samples; {
			slice := s * Levels / total
			end := min(at+p.samples, (slice+1)*total/Levels)
			if end <= s {
				end = s + 1
			}
			share := float64(end-s) / float64(p.samples)
			bytesIn[slice] += share * float64(p.size)
			samplesIn[slice] += float64(end - s)
			s = end
		}
		at += p.samples
	}
	var rate [Levels]float64
	peak, floor := 0.0, -1.0
	for i := range rate {
		if samplesIn[i] > 0 {
			rate[i] = bytesIn[i] / samplesIn[i]
			if floor < 0 || rate[i] < floor {
				floor = rate[i]
			}
		}
		peak = max(peak, rate[i])
	}
	// A variable-bitrate encoder still spends some bytes on silence: the
	// quietest slice is the floor, shown as 0.
	floor = max(floor, 0)
	out := make([]byte, Levels)
	for i, v := range rate {
		if peak > floor && v > floor {
			out[i] = byte((v - floor) / (peak - floor) * 255)
		}
	}
	return out
}
