package content

import (
	"encoding/hex"
	"strings"
	"testing"
)

// featureFile holds the vectors of the conversation features (kinds 8 to
// 13, docs/protocol.md section 8) and of the token (kind 14, 8.6), kept apart from content.json so that
// each group of kinds owns its file.
const featureFile = "../../testdata/client/content-features.json"

// featureVector is one vector of a feature kind.
type featureVector struct {
	Name    string `json:"name"`
	Hex     string `json:"hex"`
	Valid   bool   `json:"valid"`
	Kind    Kind   `json:"kind,omitempty"`
	ID      string `json:"id,omitempty"`
	Sent    int64  `json:"sent,omitempty"`
	N       uint64 `json:"n,omitempty"`
	Target  string `json:"target,omitempty"`
	Text    string `json:"text,omitempty"`
	Emoji   string `json:"emoji,omitempty"`
	Seconds uint32 `json:"seconds,omitempty"`
	Origin  string `json:"origin,omitempty"`
	OSent   int64  `json:"origin_sent,omitempty"`
	State   byte   `json:"state,omitempty"`
	Token   string `json:"token,omitempty"`
}

var tid = [16]byte{0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9}

func validFeatures() []struct {
	name string
	c    Content
} {
	return []struct {
		name string
		c    Content
	}{
		{"reaction", Content{ID: vid, Sent: 1795000000001, Body: &Reaction{Target: tid, Emoji: "👍"}}},
		{"reaction joined emoji", Content{ID: vid, Sent: 2, Body: &Reaction{Target: tid, Emoji: "👩‍👩‍👧‍👦"}}},
		{"reaction removed", Content{ID: vid, Sent: 3, Body: &Reaction{Target: tid}}},
		{"edit", Content{ID: vid, Sent: 4, Body: &Edit{Target: tid, Text: "hello, world (edited)"}}},
		{"delete", Content{ID: vid, Sent: 5, Body: &Delete{Target: tid}}},
		{"reply", Content{ID: vid, Sent: 6, Body: &Reply{N: 7, Quote: tid, Text: "yes, that one"}}},
		{"reply empty", Content{ID: vid, Sent: 7, Body: &Reply{N: 1, Quote: tid}}},
		{"timer set", Content{ID: vid, Sent: 8, Body: &Timer{N: 3, Seconds: 3600, OriginSent: 8, OriginID: vid}}},
		{"timer off, taken up", Content{ID: vid, Sent: 9, Body: &Timer{N: 4, Seconds: 0, OriginSent: 1795000000000, OriginID: tid}}},
		{"typing", Content{ID: vid, Sent: 10, Body: &Typing{State: TypingStarted}}},
		{"typing stopped", Content{ID: vid, Sent: 11, Body: &Typing{State: TypingStopped}}},
		{"token", Content{ID: vid, Sent: 12, Body: &Token{Token: [32]byte{0x5a, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 0xa5}}}},
	}
}

func invalidFeatures() []featureVector {
	h := strings.Repeat("00", 24)
	t := strings.Repeat("11", 16)
	return []featureVector{
		{Name: "reaction short", Hex: "0108" + h + t},
		{Name: "reaction length past the end", Hex: "0108" + h + t + "02" + "61"},
		{Name: "reaction trailing bytes", Hex: "0108" + h + t + "01" + "6161"},
		{Name: "reaction too long", Hex: "0108" + h + t + "41" + strings.Repeat("61", 65)},
		{Name: "reaction control character", Hex: "0108" + h + t + "01" + "0a"},
		{Name: "reaction not utf8", Hex: "0108" + h + t + "01" + "ff"},
		{Name: "edit empty", Hex: "0109" + h + t},
		{Name: "edit not utf8", Hex: "0109" + h + t + "c3"},
		{Name: "delete short", Hex: "010a" + h + strings.Repeat("11", 15)},
		{Name: "delete trailing", Hex: "010a" + h + t + "00"},
		{Name: "reply short", Hex: "010b" + h + "0000000000000001" + strings.Repeat("11", 15)},
		{Name: "reply not utf8", Hex: "010b" + h + "0000000000000001" + t + "ff"},
		{Name: "timer short", Hex: "010c" + h + "0000000000000001" + "00000e10"},
		{Name: "timer too long", Hex: "010c" + h + "0000000000000001" + "01e13381" + strings.Repeat("00", 24)},
		{Name: "typing bad state", Hex: "010d" + h + "02"},
		{Name: "typing empty", Hex: "010d" + h},
		{Name: "token short", Hex: "010e" + h + strings.Repeat("11", 31)},
		{Name: "token trailing", Hex: "010e" + h + strings.Repeat("11", 33)},
		{Name: "token all zero", Hex: "010e" + h + strings.Repeat("00", 32)},
	}
}

func toFeatureVector(name string, c *Content, b []byte) featureVector {
	v := featureVector{Name: name, Hex: hex.EncodeToString(b), Valid: true, Kind: c.Body.Kind(), ID: hex.EncodeToString(c.ID[:]), Sent: c.Sent}
	switch body := c.Body.(type) {
	case *Reaction:
		v.Target, v.Emoji = hex.EncodeToString(body.Target[:]), body.Emoji
	case *Edit:
		v.Target, v.Text = hex.EncodeToString(body.Target[:]), body.Text
	case *Delete:
		v.Target = hex.EncodeToString(body.Target[:])
	case *Reply:
		v.N, v.Target, v.Text = body.N, hex.EncodeToString(body.Quote[:]), body.Text
	case *Timer:
		v.N, v.Seconds, v.OSent, v.Origin = body.N, body.Seconds, body.OriginSent, hex.EncodeToString(body.OriginID[:])
	case *Typing:
		v.State = body.State
	case *Token:
		v.Token = hex.EncodeToString(body.Token[:])
	}
	return v
}

func loadFeatures(t testing.TB) []featureVector {
	return loadFile(t, featureFile, func() []featureVector {
		var vs []featureVector
		for _, tc := range validFeatures() {
			b, err := tc.c.Marshal()
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			vs = append(vs, toFeatureVector(tc.name, &tc.c, b))
		}
		return append(vs, invalidFeatures()...)
	})
}

func TestFeatureVectors(t *testing.T) {
	for _, v := range loadFeatures(t) {
		t.Run(v.Name, func(t *testing.T) {
			t.Parallel()
			checkVector(t, v.Hex, v.Valid, v, func(c *Content, b []byte) featureVector { return toFeatureVector(v.Name, c, b) })
		})
	}
}

func TestFeatureMarshalRejects(t *testing.T) {
	for _, tt := range []struct {
		name string
		body Body
	}{
		{"long emoji", &Reaction{Emoji: strings.Repeat("👍", 17)}},
		{"emoji with newline", &Reaction{Emoji: "a\n"}},
		{"empty edit", &Edit{}},
		{"long edit", &Edit{Text: strings.Repeat("a", MaxText+1)}},
		{"reply not utf8", &Reply{Text: "\xff"}},
		{"timer too long", &Timer{Seconds: MaxTimer + 1}},
		{"typing state", &Typing{State: 2}},
		{"zero token", &Token{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if b, err := (&Content{Body: tt.body}).Marshal(); err == nil {
				t.Fatalf("got %x, want an error", b)
			}
		})
	}
}

func FuzzReaction(f *testing.F) { fuzzKind(f, KindReaction) }
func FuzzEdit(f *testing.F)     { fuzzKind(f, KindEdit) }
func FuzzDelete(f *testing.F)   { fuzzKind(f, KindDelete) }
func FuzzReply(f *testing.F)    { fuzzKind(f, KindReply) }
func FuzzTimer(f *testing.F)    { fuzzKind(f, KindTimer) }
func FuzzTyping(f *testing.F)   { fuzzKind(f, KindTyping) }
func FuzzToken(f *testing.F)    { fuzzKind(f, KindToken) }
