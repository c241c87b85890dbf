package content

import (
	"bytes"

	"encoding/hex"
	"encoding/json"
	"flag"
	"github.com/ferry-im/ferry/session"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata vectors")

// vectorFile holds the content vectors, language-neutral.
const vectorFile = "../../testdata/client/content.json"

// vector is one content vector: the bytes and, for a valid one, the
// decoded fields (each kind fills its own).
type vector struct {
	Name  string `json:"name"`
	Hex   string `json:"hex"`
	Valid bool   `json:"valid"`

	Kind   Kind     `json:"kind,omitempty"`
	ID     string   `json:"id,omitempty"`
	Sent   int64    `json:"sent,omitempty"`
	Text   string   `json:"text,omitempty"`
	N      uint64   `json:"n,omitempty"`
	Status byte     `json:"status,omitempty"`
	IDs    []string `json:"ids,omitempty"`
	Name2  string   `json:"intro_name,omitempty"`
	Relay  string   `json:"relay,omitempty"`
	Secret string   `json:"secret,omitempty"`
	Mbox   string   `json:"mailbox,omitempty"`
	Token  string   `json:"token,omitempty"`
	Intro  string   `json:"introduction,omitempty"`
	Reason byte     `json:"reason,omitempty"`
	Data   string   `json:"data,omitempty"`

	Pointer  string `json:"pointer,omitempty"`
	Blob     string `json:"blob,omitempty"`
	SHA256   string `json:"sha256,omitempty"`
	Type     string `json:"type,omitempty"`
	FileName string `json:"file_name,omitempty"`
	Thumb    string `json:"thumb,omitempty"`
	Voice    bool   `json:"voice,omitempty"`
	Duration uint32 `json:"duration_ms,omitempty"`
	Waveform string `json:"waveform,omitempty"`

	Group *GroupControl `json:"group,omitempty"`
}

var vid = [16]byte{0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10}

func validContents() []struct {
	name string
	c    Content
} {
	return []struct {
		name string
		c    Content
	}{
		{"text", Content{ID: vid, Sent: 1795000000000, Body: &Text{N: 1, Text: "hello, world"}}},
		{"text empty", Content{ID: vid, Sent: 0, Body: &Text{N: 2, Text: ""}}},
		{"text unicode", Content{ID: vid, Sent: 1, Body: &Text{N: 1 << 40, Text: "你好 🌍"}}},
		{"receipt delivered", Content{ID: vid, Sent: 2, Body: &Receipt{Status: ReceiptDelivered, IDs: [][16]byte{{1}, {2}}}}},
		{"receipt read", Content{ID: vid, Sent: 3, Body: &Receipt{Status: ReceiptRead, IDs: [][16]byte{{0xff}}}}},
		{"introduction", Content{ID: vid, Sent: 4, Body: &Introduction{Secret: [16]byte{9}, Mailbox: [16]byte{8}, Token: [32]byte{7}, Name: "bob", Relay: "ferry://relay?k=x"}}},
		{"refusal used", Content{ID: vid, Sent: 5, Body: &Refusal{Introduction: [16]byte{6}, Reason: RefusedUsed}}},
		{"refusal unknown", Content{ID: vid, Sent: 6, Body: &Refusal{Introduction: [16]byte{6}, Reason: RefusedUnknown}}},
		{"unknown kind", Content{ID: vid, Sent: 7, Body: &Unknown{K: 200, Data: []byte("from a newer Ferry")}}},
		{"unknown kind empty", Content{ID: vid, Sent: 8, Body: &Unknown{K: 99, Data: []byte{}}}},
		{"attachment photo", Content{ID: vid, Sent: 9, Body: &Attachment{N: 3, Pointer: testPointer(), Blob: [16]byte{0xb1}, SHA256: [32]byte{0x5a},
			Type: "image/jpeg", Name: "cat.jpg", Thumb: []byte{0xff, 0xd8, 0xff, 0xd9}}}},
		{"attachment no name", Content{ID: vid, Sent: 10, Body: &Attachment{N: 4, Pointer: testPointer(), Type: "application/octet-stream"}}},
		{"group welcome", Content{ID: vid, Sent: 12, Body: &GroupControl{Op: GroupWelcome, Group: [16]byte{0x9a}, Epoch: 1, EnvelopeKey: [32]byte{0xe1},
			Name: "family", Distribution: make([]byte, DistributionLen), Admins: [][32]byte{{0xa1}}, Members: testMembers()}}},
		{"group add", Content{ID: vid, Sent: 13, Body: &GroupControl{Op: GroupAdd, Group: [16]byte{0x9a}, Members: testMembers()[1:]}}},
		{"group remove", Content{ID: vid, Sent: 14, Body: &GroupControl{Op: GroupRemove, Group: [16]byte{0x9a}, Identities: [][32]byte{{0xb2}}}}},
		{"group rename", Content{ID: vid, Sent: 15, Body: &GroupControl{Op: GroupRename, Group: [16]byte{0x9a}, Name: "family 🏠"}}},
		{"group admins", Content{ID: vid, Sent: 16, Body: &GroupControl{Op: GroupAdmins, Group: [16]byte{0x9a}, Admins: [][32]byte{{0xa1}, {0xb2}}}}},
		{"group leave", Content{ID: vid, Sent: 17, Body: &GroupControl{Op: GroupLeave, Group: [16]byte{0x9a}}}},
		{"group rekey", Content{ID: vid, Sent: 18, Body: &GroupControl{Op: GroupRekey, Group: [16]byte{0x9a}, Epoch: 2, EnvelopeKey: [32]byte{0xe2}, Identities: [][32]byte{{0xb2}}}}},
		{"attachment voice", Content{ID: vid, Sent: 11, Body: &Attachment{N: 5, Pointer: testPointer(), Blob: [16]byte{0xb2}, Type: "audio/ogg", Name: "voice.opus",
			Voice: true, Duration: 4250, Waveform: []byte{0, 40, 200, 255, 90}}}},
	}
}

func invalidVectors() []vector {
	h := strings.Repeat("00", 24)
	return []vector{
		{Name: "empty", Hex: ""},
		{Name: "short header", Hex: "0101" + strings.Repeat("00", 10)},
		{Name: "bad version", Hex: "0201" + h},
		{Name: "kind zero", Hex: "0100" + h},
		{Name: "text not utf8", Hex: "0101" + h + "0000000000000001" + "ff"},
		{Name: "text without counter", Hex: "0101" + h + "000000"},
		{Name: "receipt bad status", Hex: "0102" + h + "030001" + strings.Repeat("00", 16)},
		{Name: "receipt zero ids", Hex: "0102" + h + "010000"},
		{Name: "receipt count mismatch", Hex: "0102" + h + "010002" + strings.Repeat("00", 16)},
		{Name: "introduction empty name", Hex: "0103" + h + strings.Repeat("00", 64) + "00" + "0000"},
		{Name: "introduction truncated relay", Hex: "0103" + h + strings.Repeat("00", 64) + "0161" + "0005" + "6162"},
		{Name: "introduction trailing bytes", Hex: "0103" + h + strings.Repeat("00", 64) + "0161" + "0000" + "00"},
		{Name: "refusal short", Hex: "0104" + h + strings.Repeat("00", 16)},
		{Name: "refusal bad reason", Hex: "0104" + h + strings.Repeat("00", 16) + "09"},
		{Name: "group unknown op", Hex: "0106" + h + "09" + strings.Repeat("00", 16)},
		{Name: "group empty name", Hex: "0106" + h + "04" + strings.Repeat("00", 16) + "00"},
		{Name: "group duplicate admin", Hex: "0106" + h + "05" + strings.Repeat("00", 16) + "0002" + strings.Repeat("aa", 64)},
		{Name: "group relay index out of range", Hex: "0106" + h + "02" + strings.Repeat("00", 16) + "0001" + "000161" + "0001" + strings.Repeat("00", 80) + "0001" + "0162"},
		{Name: "group unused relay", Hex: "0106" + h + "02" + strings.Repeat("00", 16) + "0002" + "000161" + "000162" + "0001" + strings.Repeat("00", 80) + "0000" + "0162"},
		{Name: "attachment unknown flag", Hex: "0105" + h + attachmentHead() + "02" + "00" + "00" + "0000"},
		{Name: "attachment name with slash", Hex: "0105" + h + attachmentHead() + "00" + "00" + "03612f62" + "0000"},
		{Name: "attachment bad pointer", Hex: "0105" + h + "0000000000000001" + "02" + strings.Repeat("00", 76+48) + "00" + "00" + "00" + "0000"},
		{Name: "attachment trailing", Hex: "0105" + h + attachmentHead() + "00" + "00" + "00" + "0000" + "00"},
		{Name: "attachment voice truncated", Hex: "0105" + h + attachmentHead() + "01" + "00" + "00" + "0000" + "000010"},
	}
}

func hexIDs(ids [][16]byte) []string {
	var out []string
	for _, id := range ids {
		out = append(out, hex.EncodeToString(id[:]))
	}
	return out
}

func toVector(name string, c *Content, b []byte) vector {
	v := vector{Name: name, Hex: hex.EncodeToString(b), Valid: true, Kind: c.Body.Kind(), ID: hex.EncodeToString(c.ID[:]), Sent: c.Sent}
	switch body := c.Body.(type) {
	case *Text:
		v.Text, v.N = body.Text, body.N
	case *Receipt:
		v.Status, v.IDs = body.Status, hexIDs(body.IDs)
	case *Introduction:
		v.Name2, v.Relay = body.Name, body.Relay
		v.Secret, v.Mbox, v.Token = hex.EncodeToString(body.Secret[:]), hex.EncodeToString(body.Mailbox[:]), hex.EncodeToString(body.Token[:])
	case *Refusal:
		v.Intro, v.Reason = hex.EncodeToString(body.Introduction[:]), body.Reason
	case *Unknown:
		v.Data = hex.EncodeToString(body.Data)
	case *GroupControl:
		v.Group = body
	case *Attachment:
		ptr, _ := body.Pointer.MarshalBinary()
		v.N, v.Pointer, v.Blob, v.SHA256 = body.N, hex.EncodeToString(ptr), hex.EncodeToString(body.Blob[:]), hex.EncodeToString(body.SHA256[:])
		v.Type, v.FileName, v.Thumb = body.Type, body.Name, hex.EncodeToString(body.Thumb)
		v.Voice, v.Duration, v.Waveform = body.Voice, body.Duration, hex.EncodeToString(body.Waveform)
	}
	return v
}

// testMembers are three members on two relays.
func testMembers() []Member {
	return []Member{
		{Identity: [32]byte{0xa1}, Mailbox: [16]byte{1}, Token: [32]byte{2}, Relay: "ferry://relay?v=1&k=AAAA&tcp=a.example:7443", Name: "alice"},
		{Identity: [32]byte{0xb2}, Mailbox: [16]byte{3}, Token: [32]byte{4}, Relay: "ferry://relay?v=1&k=BBBB&tcp=b.example:7443", Name: "bob"},
		{Identity: [32]byte{0xc3}, Mailbox: [16]byte{5}, Token: [32]byte{6}, Relay: "ferry://relay?v=1&k=AAAA&tcp=a.example:7443", Name: "carol"},
	}
}

// testPointer is a fixed attachment pointer for the vectors.
func testPointer() session.AttachmentPointer {
	return session.AttachmentPointer{Key: [32]byte{0x6b, 1}, Digest: [32]byte{0xd1, 2}, Size: 123456}
}

// attachmentHead is the hex of an attachment body up to its flags: n,
// the test pointer, a zero blob id and a zero SHA-256.
func attachmentHead() string {
	p := testPointer()
	ptr, _ := p.MarshalBinary()
	return "0000000000000001" + hex.EncodeToString(ptr) + strings.Repeat("00", 48)
}

func loadVectors(t testing.TB) []vector {
	return loadFile(t, vectorFile, func() []vector {
		var vs []vector
		for _, tc := range validContents() {
			b, err := tc.c.Marshal()
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			vs = append(vs, toVector(tc.name, &tc.c, b))
		}
		return append(vs, invalidVectors()...)
	})
}

// loadFile reads a vector file, first writing it with make's vectors when
// -update is set.
func loadFile[V any](t testing.TB, file string, make func() []V) []V {
	if *update {
		out, _ := json.MarshalIndent(make(), "", "  ")
		os.MkdirAll(filepath.Dir(file), 0o755)
		if err := os.WriteFile(file, append(out, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var vs []V
	if err := json.Unmarshal(b, &vs); err != nil {
		t.Fatal(err)
	}
	return vs
}

func TestVectors(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			t.Parallel()
			checkVector(t, v.Hex, v.Valid, v, func(c *Content, b []byte) vector { return toVector(v.Name, c, b) })
		})
	}
}

// checkVector checks one vector: an invalid one does not parse; a valid
// one parses to the fields want holds (as conv reads them) and encodes
// back to the same bytes.
func checkVector[V any](t *testing.T, hexs string, valid bool, want V, conv func(*Content, []byte) V) {
	b, err := hex.DecodeString(hexs)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse(b)
	if !valid {
		if err == nil {
			t.Fatalf("parsed invalid content: %+v", c.Body)
		}
		return
	}
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if got := conv(c, b); !equalJSON(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	again, err := c.Marshal()
	if err != nil || !bytes.Equal(again, b) {
		t.Fatalf("marshal: got %x (%v), want %x", again, err, b)
	}
}

func equalJSON(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

func TestMarshalRejects(t *testing.T) {
	for _, tt := range []struct {
		name string
		body Body
	}{
		{"long text", &Text{Text: strings.Repeat("a", MaxText+1)}},
		{"invalid utf8", &Text{Text: "\xff"}},
		{"receipt no ids", &Receipt{Status: ReceiptRead}},
		{"receipt status", &Receipt{Status: 9, IDs: [][16]byte{{}}}},
		{"intro no name", &Introduction{}},
		{"intro long name", &Introduction{Name: strings.Repeat("n", MaxNameLen+1)}},
		{"refusal reason", &Refusal{}},
		{"no body", nil},
		{"kind zero", &Unknown{}},
		{"unknown too long", &Unknown{K: 99, Data: make([]byte, MaxBody+1)}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if b, err := (&Content{Body: tt.body}).Marshal(); err == nil {
				t.Fatalf("got %x, want an error", b)
			}
		})
	}
}

// TestKnown: Unknown never shadows a kind this version parses.
func TestKnown(t *testing.T) {
	for k := range 256 {
		body, err := ParseBody(Kind(k), nil)
		if _, unknown := body.(*Unknown); unknown == Known(Kind(k)) && err == nil {
			t.Errorf("kind %d: Known %v but parsed as %T", k, Known(Kind(k)), body)
		}
	}
}
