package webm

import (
	"encoding/binary"

	"github.com/ferry-im/ferry/internal/voice"
)

// oggWriter writes the pages of one logical Ogg stream (RFC 3533 section
// 6): "OggS", version 0, header type, granule position (64, LE), serial
// (32, LE), page sequence (32, LE), CRC (32, LE), segment count, lacing
// values, then the packets. Each page here ends on a packet boundary.
type oggWriter struct {
	b      []byte
	serial uint32
	seq    uint32
}

func (w *oggWriter) page(pkts [][]byte, granule int64, flags byte) {
	start := len(w.b)
	w.b = append(w.b, 'O', 'g', 'g', 'S', 0, flags)
	w.b = binary.LittleEndian.AppendUint64(w.b, uint64(granule))
	w.b = binary.LittleEndian.AppendUint32(w.b, w.serial)
	w.b = binary.LittleEndian.AppendUint32(w.b, w.seq)
	w.seq++
	w.b = append(w.b, 0, 0, 0, 0) // CRC, set below
	var lacing []byte
	for _, p := range pkts {
		n := len(p)
		for ; n >= 255; n -= 255 {
			lacing = append(lacing, 255)
		}
		lacing = append(lacing, byte(n))
	}
	w.b = append(w.b, byte(len(lacing)))
	w.b = append(w.b, lacing...)
	for _, p := range pkts {
		w.b = append(w.b, p...)
	}
	binary.LittleEndian.PutUint32(w.b[start+22:], voice.PageCRC(w.b[start:]))
}
