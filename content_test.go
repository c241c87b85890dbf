package ferry

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata vectors")

const contentVectors = "testdata/client/content.json"

type contentVector struct {
	Name  string `json:"name"`
	Hex   string `json:"hex"`
	Valid bool   `json:"valid"`
	// For valid vectors, the decoded fields.
	Kind   ContentKind `json:"kind,omitempty"`
	ID     string      `json:"id,omitempty"`
	Sent   int64       `json:"sent,omitempty"`
	Text   string      `json:"text,omitempty"`
	N      uint64      `json:"n,omitempty"`
	Status byte        `json:"status,omitempty"`
	IDs    []string    `json:"ids,omitempty"`
	Name2  string      `json:"intro_name,omitempty"`
	Relay  string      `json:"relay,omitempty"`
	Secret string      `json:"secret,omitempty"`
	Mbox   string      `json:"mailbox,omitempty"`
	Token  string      `json:"token,omitempty"`
}

func vectorContents() []struct {
	name string
	c    content
} {
	id := [16]byte{0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10}
	return []struct {
		name string
		c    content
	}{
		{"text", content{Kind: KindText, ID: id, Sent: 1795000000000, N: 1, Text: "hello, world"}},
		{"text empty", content{Kind: KindText, ID: id, Sent: 0, N: 2, Text: ""}},
		{"text unicode", content{Kind: KindText, ID: id, Sent: 1, N: 1 << 40, Text: "你好 🌍"}},
		{"receipt delivered", content{Kind: KindReceipt, ID: id, Sent: 2, Status: ReceiptDelivered, IDs: [][16]byte{{1}, {2}}}},
		{"receipt read", content{Kind: KindReceipt, ID: id, Sent: 3, Status: ReceiptRead, IDs: [][16]byte{{0xff}}}},
		{"introduction", content{Kind: KindIntroduction, ID: id, Sent: 4, Secret: [16]byte{9}, Mailbox: [16]byte{8}, Token: [32]byte{7}, Name: "bob", Relay: "ferry://relay?k=x"}},
	}
}

func invalidVectors() []contentVector {
	return []contentVector{
		{Name: "empty", Hex: ""},
		{Name: "short header", Hex: "0101" + strings.Repeat("00", 10)},
		{Name: "bad version", Hex: "0201" + strings.Repeat("00", 24)},
		{Name: "unknown kind", Hex: "0109" + strings.Repeat("00", 24)},
		{Name: "text not utf8", Hex: "0101" + strings.Repeat("00", 24) + "0000000000000001" + "ff"},
		{Name: "text without counter", Hex: "0101" + strings.Repeat("00", 24) + "000000"},
		{Name: "receipt bad status", Hex: "0102" + strings.Repeat("00", 24) + "030001" + strings.Repeat("00", 16)},
		{Name: "receipt zero ids", Hex: "0102" + strings.Repeat("00", 24) + "010000"},
		{Name: "receipt count mismatch", Hex: "0102" + strings.Repeat("00", 24) + "010002" + strings.Repeat("00", 16)},
		{Name: "introduction empty name", Hex: "0103" + strings.Repeat("00", 24) + strings.Repeat("00", 64) + "00" + "0000"},
		{Name: "introduction truncated relay", Hex: "0103" + strings.Repeat("00", 24) + strings.Repeat("00", 64) + "0161" + "0005" + "6162"},
		{Name: "introduction trailing bytes", Hex: "0103" + strings.Repeat("00", 24) + strings.Repeat("00", 64) + "0161" + "0000" + "00"},
	}
}

func hexIDs(ids [][16]byte) []string {
	var out []string
	for _, id := range ids {
		out = append(out, hex.EncodeToString(id[:]))
	}
	return out
}

func toVector(name string, c *content, b []byte) contentVector {
	v := contentVector{Name: name, Hex: hex.EncodeToString(b), Valid: true, Kind: c.Kind, ID: hex.EncodeToString(c.ID[:]), Sent: c.Sent}
	switch c.Kind {
	case KindText:
		v.Text, v.N = c.Text, c.N
	case KindReceipt:
		v.Status, v.IDs = c.Status, hexIDs(c.IDs)
	case KindIntroduction:
		v.Name2, v.Relay = c.Name, c.Relay
		v.Secret, v.Mbox, v.Token = hex.EncodeToString(c.Secret[:]), hex.EncodeToString(c.Mailbox[:]), hex.EncodeToString(c.Token[:])
	}
	return v
}

func loadContentVectors(t testing.TB) []contentVector {
	if *update {
		var vs []contentVector
		for _, tc := range vectorContents() {
			b, err := tc.c.marshal()
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			vs = append(vs, toVector(tc.name, &tc.c, b))
		}
		vs = append(vs, invalidVectors()...)
		out, _ := json.MarshalIndent(vs, "", "  ")
		os.MkdirAll(filepath.Dir(contentVectors), 0o755)
		if err := os.WriteFile(contentVectors, append(out, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(contentVectors)
	if err != nil {
		t.Fatal(err)
	}
	var vs []contentVector
	if err := json.Unmarshal(b, &vs); err != nil {
		t.Fatal(err)
	}
	return vs
}

func TestContentVectors(t *testing.T) {
	for _, v := range loadContentVectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			t.Parallel()
			b, err := hex.DecodeString(v.Hex)
			if err != nil {
				t.Fatal(err)
			}
			c, err := parseContent(b)
			if !v.Valid {
				if err == nil {
					t.Fatalf("parsed invalid content: %+v", c)
				}
				return
			}
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			got := toVector(v.Name, c, b)
			if !equalJSON(got, v) {
				t.Fatalf("got %+v, want %+v", got, v)
			}
			again, err := c.marshal()
			if err != nil || !bytes.Equal(again, b) {
				t.Fatalf("marshal: got %x (%v), want %x", again, err, b)
			}
		})
	}
}

func equalJSON(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

func TestContentMarshalRejects(t *testing.T) {
	for _, tt := range []struct {
		name string
		c    content
	}{
		{"long text", content{Kind: KindText, Text: strings.Repeat("a", MaxText+1)}},
		{"invalid utf8", content{Kind: KindText, Text: "\xff"}},
		{"receipt no ids", content{Kind: KindReceipt, Status: ReceiptRead}},
		{"receipt status", content{Kind: KindReceipt, Status: 9, IDs: [][16]byte{{}}}},
		{"intro no name", content{Kind: KindIntroduction}},
		{"intro long name", content{Kind: KindIntroduction, Name: strings.Repeat("n", maxNameLen+1)}},
		{"kind", content{Kind: 77}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if b, err := tt.c.marshal(); err == nil {
				t.Fatalf("got %x, want an error", b)
			}
		})
	}
}

// FuzzContent checks that the decoder never panics and that whatever it
// accepts encodes back to the same bytes.
func FuzzContent(f *testing.F) {
	for _, v := range loadContentVectors(f) {
		b, _ := hex.DecodeString(v.Hex)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := parseContent(b)
		if err != nil {
			if c != nil {
				t.Fatal("non-nil content with an error")
			}
			return
		}
		again, err := c.marshal()
		if err != nil {
			t.Fatalf("marshal of parsed content: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("round trip: got %x, want %x", again, b)
		}
	})
}
