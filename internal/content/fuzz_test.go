package content

import (
	"bytes"
	"encoding/hex"
	"testing"
)

// FuzzContent: a whole content either fails to parse (and gives nil) or
// encodes back to the same bytes.
func FuzzContent(f *testing.F) {
	for _, v := range loadVectors(f) {
		b, _ := hex.DecodeString(v.Hex)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err != nil {
			if c != nil {
				t.Fatal("non-nil content with an error")
			}
			return
		}
		again, err := c.Marshal()
		if err != nil {
			t.Fatalf("marshal of parsed content: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("round trip: got %x, want %x", again, b)
		}
	})
}

// fuzzKind fuzzes one kind's body parser, seeded with the bodies of that
// kind's vectors (content.json and content-features.json): parse then encode gives the same bytes, or an error.
func fuzzKind(f *testing.F, k Kind) {
	var seeds []string
	for _, v := range loadVectors(f) {
		seeds = append(seeds, v.Hex)
	}
	for _, v := range loadFeatures(f) {
		seeds = append(seeds, v.Hex)
	}
	for _, h := range seeds {
		b, _ := hex.DecodeString(h)
		if len(b) >= HeaderLen && Kind(b[1]) == k {
			f.Add(b[HeaderLen:])
		}
	}
	parse := kinds[k]
	f.Fuzz(func(t *testing.T, b []byte) {
		body, err := parse(b)
		if err != nil {
			if body != nil {
				t.Fatal("non-nil body with an error")
			}
			return
		}
		if body.Kind() != k {
			t.Fatalf("parsed kind %d, want %d", body.Kind(), k)
		}
		again, err := EncodeBody(body)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("round trip: got %x (%v), want %x", again, err, b)
		}
	})
}

func FuzzText(f *testing.F)         { fuzzKind(f, KindText) }
func FuzzReceipt(f *testing.F)      { fuzzKind(f, KindReceipt) }
func FuzzIntroduction(f *testing.F) { fuzzKind(f, KindIntroduction) }
func FuzzRefusal(f *testing.F)      { fuzzKind(f, KindRefusal) }
func FuzzAttachment(f *testing.F)   { fuzzKind(f, KindAttachment) }
func FuzzGroupControl(f *testing.F) { fuzzKind(f, KindGroupControl) }
