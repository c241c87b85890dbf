package voice

import (
	"encoding/binary"
	"fmt"
)

// Ogg pages (RFC 3533 section 6):
//
//	"OggS" | version u8 = 0 | header type u8 | granule position i64 LE
//	| serial u32 LE | sequence u32 LE | CRC u32 LE | segments u8
//	| segment table (segments bytes) | data (the sum of the table)
//
// A packet is the concatenation of lacing values up to one below 255; a
// page that ends on 255 continues the packet on the next page (header
// type bit 0 set there). The CRC is CRC-32 with polynomial 0x04c11db7, no
// reflection, initial value 0, over the page with its CRC field zeroed.
const (
	pageHeaderLen = 27
	flagContinued = 0x01
	flagFirst     = 0x02
)

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

// PageCRC is the Ogg page checksum of b (for writers of Ogg pages).
func PageCRC(b []byte) uint32 { return oggCRC(b) }

// oggCRC is the Ogg page checksum of b.
func oggCRC(b []byte) uint32 {
	var c uint32
	for _, x := range b {
		c = c<<8 ^ crcTable[byte(c>>24)^x]
	}
	return c
}

// packets splits the first logical stream of an Ogg file into packets and
// returns them with the last granule position of that stream (-1 if no
// page gave one).
func packets(b []byte) (pkts [][]byte, granule int64, err error) {
	granule = -1
	var serial uint32
	var cur []byte
	open := false // cur continues on the next page
	first := true
	for len(b) > 0 {
		page, rest, err := nextPage(b)
		if err != nil {
			return nil, 0, err
		}
		b = rest
		if first {
			if page.flags&flagFirst == 0 {
				return nil, 0, fmt.Errorf("%w: the first page does not begin a stream", ErrNotOpus)
			}
			serial, first = page.serial, false
		} else if page.serial != serial {
			continue // another logical stream
		}
		if page.flags&flagContinued != 0 != open {
			return nil, 0, fmt.Errorf("%w: a packet continued across pages wrongly", ErrNotOpus)
		}
		data := page.data
		for _, lace := range page.lacing {
			cur = append(cur, data[:lace]...)
			data = data[lace:]
			if lace < 255 {
				pkts = append(pkts, cur)
				cur = nil
			}
		}
		open = len(page.lacing) > 0 && page.lacing[len(page.lacing)-1] == 255
		if page.granule != -1 {
			granule = page.granule
		}
	}
	if first {
		return nil, 0, fmt.Errorf("%w: no Ogg page", ErrNotOpus)
	}
	return pkts, granule, nil
}

type page struct {
	flags   byte
	granule int64
	serial  uint32
	lacing  []byte
	data    []byte
}

// nextPage parses the page at the start of b.
func nextPage(b []byte) (page, []byte, error) {
	if len(b) < pageHeaderLen || string(b[:4]) != "OggS" || b[4] != 0 {
		return page{}, nil, fmt.Errorf("%w: not an Ogg page", ErrNotOpus)
	}
	n := int(b[26])
	if len(b) < pageHeaderLen+n {
		return page{}, nil, fmt.Errorf("%w: a truncated page", ErrNotOpus)
	}
	p := page{flags: b[5], granule: int64(binary.LittleEndian.Uint64(b[6:14])), serial: binary.LittleEndian.Uint32(b[14:18]),
		lacing: b[pageHeaderLen : pageHeaderLen+n]}
	size := 0
	for _, l := range p.lacing {
		size += int(l)
	}
	end := pageHeaderLen + n + size
	if len(b) < end {
		return page{}, nil, fmt.Errorf("%w: a truncated page", ErrNotOpus)
	}
	p.data = b[pageHeaderLen+n : end]
	want := binary.LittleEndian.Uint32(b[22:26])
	hdr := make([]byte, end)
	copy(hdr, b[:end])
	clear(hdr[22:26])
	if oggCRC(hdr) != want {
		return page{}, nil, fmt.Errorf("%w: a page fails its checksum", ErrNotOpus)
	}
	if p.flags&^0x07 != 0 {
		return page{}, nil, fmt.Errorf("%w: unknown page flags", ErrNotOpus)
	}
	return p, b[end:], nil
}
