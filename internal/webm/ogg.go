package webm

import "encoding/binary"

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
	binary.LittleEndian.PutUint32(w.b[start+22:], crc(w.b[start:]))
}

// crcTable is the Ogg checksum's: CRC-32, polynomial 0x04c11db7, not
// reflected, initial value 0.
var crcTable = func() (t [256]uint32) {
	for i := range t {
		r := uint32(i) << 24
		for range 8 {
			if r&0x80000000 != 0 {
				r = r<<1 ^ 0x04c11db7
			} else {
				r <<= 1
			}
		}
		t[i] = r
	}
	return t
}()

func crc(b []byte) uint32 {
	var c uint32
	for _, x := range b {
		c = c<<8 ^ crcTable[byte(c>>24)^x]
	}
	return c
}
