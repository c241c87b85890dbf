package session

import (
	"bytes"
	"encoding/hex"
	"testing"
)

func TestPaddedLen(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ n, want int }{
		{0, 256}, {255, 256}, {256, 512}, {511, 512}, {512, 1024}, {1023, 1024},
		{2047, 2048}, {4095, 4096}, {8191, 8192}, {16383, 16384}, {32767, 32768},
		{32768, 65536}, {65535, 65536}, {65536, 131072}, {131071, 131072}, {131072, 196608},
		{maxPaddedLength - 1, maxPaddedLength}, {maxPaddedLength, -1}, {-1, -1},
	} {
		if got := paddedLen(c.n); got != c.want {
			t.Errorf("paddedLen(%d) = %d, want %d", c.n, got, c.want)
		}
	}
	for _, c := range []struct {
		n    int
		want bool
	}{{256, true}, {512, true}, {768, false}, {65536, true}, {196608, true}, {196609, false}, {255, false}, {0, false}} {
		if got := isBucket(c.n); got != c.want {
			t.Errorf("isBucket(%d) = %v, want %v", c.n, got, c.want)
		}
	}
}

func TestPadRoundTrip(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, 1, 254, 255, 256, 1000, 65535, 65536, 200000} {
		for _, fill := range []byte{0x00, 0x80, 0xff} {
			b := bytes.Repeat([]byte{fill}, n)
			p, err := pad(b)
			if err != nil || len(p) != paddedLen(n) {
				t.Fatalf("pad(%d×%#x): %d bytes, %v", n, fill, len(p), err)
			}
			u, err := unpad(p)
			if err != nil || !bytes.Equal(u, b) {
				t.Errorf("unpad(pad(%d×%#x)) = %d bytes, %v", n, fill, len(u), err)
			}
		}
	}
	if _, err := pad(make([]byte, maxPaddedLength)); err == nil {
		t.Error("pad accepted an oversized message")
	}
}

func TestUnpadRejects(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"all zeros", make([]byte, 256)},
		{"no marker", append([]byte{1, 2, 3, 0x7f}, make([]byte, 252)...)},
		{"last byte 0x01", []byte{0x80, 0x01}},
	} {
		if _, err := unpad(c.b); err == nil {
			t.Errorf("%s: accepted", c.name)
		}
	}
}

func FuzzPad(f *testing.F) {
	f.Add([]byte{}, []byte{0x80})
	f.Add([]byte("hello"), append([]byte("hi\x80"), make([]byte, 253)...))
	f.Fuzz(func(t *testing.T, msg, padded []byte) {
		p, err := pad(msg)
		if err != nil {
			t.Fatal(err)
		}
		if u, err := unpad(p); err != nil || !bytes.Equal(u, msg) || !isBucket(len(p)) {
			t.Fatalf("pad round trip: %v", err)
		}
		u, err := unpad(padded)
		if err != nil {
			return
		}
		// Canonical padded input (a bucket long) comes back unchanged.
		if isBucket(len(padded)) && paddedLen(len(u)) == len(padded) {
			if p, _ := pad(u); !bytes.Equal(p, padded) {
				t.Fatalf("unpad then pad: %x -> %x", padded, p)
			}
		}
	})
}

// padVectors is testdata/extras-pad.json: the bucket table and padded bytes.
type padVectors struct {
	Description string      `json:"description"`
	Buckets     []padBucket `json:"buckets"`
	Padded      []padCase   `json:"padded"`
}

type padBucket struct {
	Len    int `json:"plaintext_len"`
	Padded int `json:"padded_len"`
}

type padCase struct {
	Plaintext string `json:"plaintext"`
	Padded    string `json:"padded"`
}

func genPadVectors(t *testing.T) padVectors {
	v := padVectors{Description: "Padding buckets (docs/protocol.md section 3.1): plaintext || 0x80 || zeros up to the bucket. Regenerate: go test ./session -run ExtrasVectors -update"}
	for _, n := range []int{0, 255, 256, 511, 512, 1023, 1024, 2047, 2048, 4095, 4096, 8191, 8192, 16383, 16384, 32767, 32768, 65535, 65536, 131071, 131072, 1 << 20, maxPaddedLength - 1} {
		v.Buckets = append(v.Buckets, padBucket{n, paddedLen(n)})
	}
	for _, pt := range []string{"", "68656c6c6f", "80", "0000"} {
		p, err := pad(unhex(t, pt))
		if err != nil {
			t.Fatal(err)
		}
		v.Padded = append(v.Padded, padCase{pt, hex.EncodeToString(p)})
	}
	return v
}

func verifyPadVectors(t *testing.T, v padVectors) {
	for _, b := range v.Buckets {
		if got := paddedLen(b.Len); got != b.Padded {
			t.Errorf("paddedLen(%d) = %d, want %d", b.Len, got, b.Padded)
		}
	}
	for _, p := range v.Padded {
		if got, err := unpad(unhex(t, p.Padded)); err != nil || hex.EncodeToString(got) != p.Plaintext {
			t.Errorf("unpad(%s…) = %x, %v, want %s", p.Padded[:8], got, err, p.Plaintext)
		}
	}
}
