package wire

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/frames.json from the cases in this file")

func seq(n int, start byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = start + byte(i)
	}
	return b
}

func arr16(start byte) (a [16]byte) { copy(a[:], seq(16, start)); return }
func arr32(start byte) (a [32]byte) { copy(a[:], seq(32, start)); return }

// messages are the values the vectors are made from, one or more per type.
func messages() []Message {
	return []Message{
		Ping{Nonce: 0x0102030405060708},
		Pong{Nonce: 0xfffffffffffffffe},
		OK{ReqID: 7},
		Error{ReqID: 9, Code: CodeNotFound, Msg: "no prekeys"},
		Error{ReqID: 0, Code: CodeBadRequest},
		Send{ID: arr16(1), To: arr16(0x20), Token: arr32(0x40), Envelope: []byte("sealed envelope")},
		Send{ID: arr16(2), To: arr16(0x21), Token: arr32(0x41)},
		SendOK{ID: arr16(1)},
		SendErr{ID: arr16(1), Code: CodeQuota, Msg: "mailbox full"},
		Subscribe{ReqID: 1},
		Deliver{Seq: 42, ID: arr16(1), Received: 1763700000000, Envelope: []byte("sealed envelope")},
		Deliver{Seq: 1<<63 + 5, ID: arr16(3), Received: -1},
		Ack{Seqs: []uint64{42}},
		Ack{Seqs: []uint64{1, 2, 1 << 40}},
		SetToken{ReqID: 3, Token: arr32(0x60)},
		PutPrekeys{ReqID: 4, Signed: seq(10, 1), OneTime: []Prekey{{ID: 1, Data: seq(3, 9)}, {ID: 2, Data: seq(4, 9)}}, KEM: []Prekey{{ID: 100, Data: seq(5, 7)}}, LastResort: seq(6, 2)},
		PutPrekeys{ReqID: 5},
		GetBundle{ReqID: 6, Mailbox: arr16(0x20), Token: arr32(0x40)},
		Bundle{ReqID: 6, Signed: seq(10, 1), OneTimeID: 1, OneTime: seq(3, 9), KEMID: 100, KEM: seq(5, 7)},
		Bundle{ReqID: 8, Signed: seq(10, 1), KEM: seq(6, 2), KEMLastResort: true},
		AddToken{ReqID: 10, Token: arr32(0x61)},
		RemoveToken{ReqID: 11, Token: arr32(0x62)},
		GetPrekeyCount{ReqID: 12},
		PrekeyCount{ReqID: 12, OneTime: 3, KEM: 1 << 31},
		PutRanking{ReqID: 10, Blob: []byte("FRK\x01 signed ranking")},
		GetRanking{ReqID: 11},
		Rankings{ReqID: 11, Observed: netip.MustParseAddr("203.0.113.7"), Blobs: [][]byte{[]byte("FRK\x01 one"), []byte("FRK\x01 two")}},
		Rankings{ReqID: 12, Observed: netip.MustParseAddr("2001:db8::1")},
		Rankings{ReqID: 13},
	}
}

// badFrames are payloads every reader must reject.
func badFrames() []badVector {
	return []badVector{
		{"ping short", TypePing, "01020304050607", "truncated"},
		{"ping long", TypePing, "010203040506070809", "1 trailing bytes"},
		{"ok empty", TypeOK, "", "truncated"},
		{"error msg too long", TypeError, "00000001" + "0001" + "0401" + strings.Repeat("61", 1025), "too large"},
		{"error msg truncated", TypeError, "00000001" + "0001" + "0005" + "6161", "truncated"},
		{"send short", TypeSend, hex.EncodeToString(make([]byte, 63)), "truncated"},
		{"send envelope too large", TypeSend, hex.EncodeToString(make([]byte, 64+MaxEnvelope+1)), "too large"},
		{"ack zero", TypeAck, "0000", "0 sequence numbers"},
		{"ack count mismatch", TypeAck, "0002" + "0000000000000001", "2 sequence numbers in 8 bytes"},
		{"prekeys count lies", TypePutPrekeys, "00000001" + "0000" + "ffff", "more than 1000 prekeys"},
		{"prekeys truncated", TypePutPrekeys, "00000001" + "0000" + "0002" + "00000001000101", "truncated"},
		{"prekey empty", TypePutPrekeys, "00000001" + "0000" + "0001" + "000000010000" + "0000" + "0000", "empty prekey"},
		{"bundle unknown flag", TypeBundle, "00000001" + "02" + "0000" + "00000000" + "0000" + "00000000" + "0000", "unknown flags 0x02"},
		{"bundle signed too large", TypeBundle, "00000001" + "00" + "1001", "too large"},
		{"add token short", TypeAddToken, "00000001" + strings.Repeat("00", 31), "truncated"},
		{"remove token long", TypeRemoveToken, "00000001" + strings.Repeat("00", 33), "1 trailing bytes"},
		{"prekey count short", TypePrekeyCount, "00000001" + "00000002", "truncated"},
		{"ranking empty", TypePutRanking, "00000001", "empty blob"},
		{"ranking too large", TypePutRanking, "00000001" + strings.Repeat("00", MaxRanking+1), "too large"},
		{"rankings address of 5 bytes", TypeRankings, "00000001" + "05" + "0102030405" + "00", "an address of 5 bytes"},
		{"rankings v4-mapped address", TypeRankings, "00000001" + "10" + "00000000000000000000ffffcb007107" + "00", "v4-mapped"},
		{"rankings too many", TypeRankings, "00000001" + "00" + "11", "too large"},
		{"rankings empty blob", TypeRankings, "00000001" + "00" + "01" + "0000", "empty blob"},
		{"rankings truncated", TypeRankings, "00000001" + "00" + "01" + "0005" + "0102", "truncated"},
	}
}

type badVector struct {
	Name    string `json:"name"`
	Type    Type   `json:"type"`
	Payload string `json:"payload"`
	Error   string `json:"error"` // substring of the error
}

type goodVector struct {
	Type   string          `json:"type"`
	Fields json.RawMessage `json:"fields"`
	Frame  string          `json:"frame"` // hex of the whole envelope
}

type vectorFile struct {
	Comment string       `json:"comment"`
	Valid   []goodVector `json:"valid"`
	Invalid []badVector  `json:"invalid"`
}

// fieldsJSON renders a message language-neutrally: byte arrays and slices as
// hex, numbers as numbers, the Code as its number.
func fieldsJSON(m Message) json.RawMessage {
	b, err := json.Marshal(toJSON(reflect.ValueOf(m)))
	if err != nil {
		panic(err)
	}
	return b
}

func toJSON(v reflect.Value) any {
	if a, ok := v.Interface().(netip.Addr); ok {
		if !a.IsValid() {
			return ""
		}
		return a.String()
	}
	switch v.Kind() {
	case reflect.Struct:
		out := map[string]any{}
		for i := range v.NumField() {
			out[v.Type().Field(i).Name] = toJSON(v.Field(i))
		}
		return out
	case reflect.Array, reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			b := make([]byte, v.Len())
			reflect.Copy(reflect.ValueOf(b), v)
			return hex.EncodeToString(b)
		}
		out := []any{}
		for i := range v.Len() {
			out = append(out, toJSON(v.Index(i)))
		}
		return out
	}
	return v.Interface()
}

func TestVectors(t *testing.T) {
	if *update {
		vf := vectorFile{Comment: "Ferry wire frame vectors (docs/protocol.md section 5). frame = type u8 | length u32 | payload, hex. Regenerate with: go test ./wire -run TestVectors -update"}
		for _, m := range messages() {
			f, err := NewFrame(m)
			if err != nil {
				t.Fatal(err)
			}
			env, _ := f.MarshalBinary()
			vf.Valid = append(vf.Valid, goodVector{Type: m.Type().String(), Fields: fieldsJSON(m), Frame: hex.EncodeToString(env)})
		}
		vf.Invalid = badFrames()
		b, err := json.MarshalIndent(vf, "", " ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile("testdata/frames.json", append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Parallel()
	checkVectors(t, loadVectors(t))
}

// checkVectors runs a vector file as parallel subtests: each valid frame
// decodes to its fields and re-encodes to the same bytes; each invalid
// payload fails with its error.
func checkVectors(t *testing.T, vf vectorFile) {
	for i, v := range vf.Valid {
		t.Run(fmt.Sprintf("valid/%02d_%s", i, v.Type), func(t *testing.T) {
			t.Parallel()
			env, err := hex.DecodeString(v.Frame)
			if err != nil {
				t.Fatal(err)
			}
			var f Frame
			if err := f.UnmarshalBinary(env); err != nil {
				t.Fatal(err)
			}
			m, err := Decode(f)
			if err != nil {
				t.Fatal(err)
			}
			if got := m.Type().String(); got != v.Type {
				t.Fatalf("type %s, want %s", got, v.Type)
			}
			var want bytes.Buffer
			json.Compact(&want, v.Fields)
			if got := fieldsJSON(m); !bytes.Equal(got, want.Bytes()) {
				t.Fatalf("fields %s, want %s", got, want.Bytes())
			}
			f2, err := NewFrame(m)
			if err != nil {
				t.Fatal(err)
			}
			env2, _ := f2.MarshalBinary()
			if !bytes.Equal(env2, env) {
				t.Fatalf("re-marshalled frame %x, want %x", env2, env)
			}
		})
	}
	for _, v := range vf.Invalid {
		t.Run("invalid/"+v.Name, func(t *testing.T) {
			t.Parallel()
			p, err := hex.DecodeString(v.Payload)
			if err != nil {
				t.Fatal(err)
			}
			m, err := Decode(Frame{Type: v.Type, Payload: p})
			if err == nil || !strings.Contains(err.Error(), v.Error) {
				t.Fatalf("Decode: got %v, %v; want error containing %q", m, err, v.Error)
			}
		})
	}
}

func loadVectors(t testing.TB) vectorFile {
	b, err := os.ReadFile("testdata/frames.json")
	if err != nil {
		t.Fatal(err)
	}
	var vf vectorFile
	if err := json.Unmarshal(b, &vf); err != nil {
		t.Fatal(err)
	}
	return vf
}

func TestEveryTypeHasAVector(t *testing.T) {
	t.Parallel()
	seen := map[Type]bool{}
	for _, m := range messages() {
		seen[m.Type()] = true
	}
	for typ := range typeNames {
		if !seen[typ] {
			t.Errorf("no vector for %v", typ)
		}
	}
}

// TestUnknownTypeSkipped reads a stream with a frame of an unknown type
// between two known ones: the reader gets all three envelopes, Decode
// reports ErrUnknownType for the middle one, and a reader that skips it
// handles both known frames.
func TestUnknownTypeSkipped(t *testing.T) {
	t.Parallel()
	var stream bytes.Buffer
	f1, _ := NewFrame(Ping{Nonce: 1})
	f3, _ := NewFrame(Ack{Seqs: []uint64{7}})
	WriteFrame(&stream, f1)
	WriteFrame(&stream, Frame{Type: 0xee, Payload: []byte("from a newer peer")})
	WriteFrame(&stream, f3)
	var handled []Message
	skipped := 0
	for {
		f, err := ReadFrame(&stream)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		m, err := Decode(f)
		if errors.Is(err, ErrUnknownType) {
			skipped++
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		handled = append(handled, m)
	}
	want := []Message{Ping{Nonce: 1}, Ack{Seqs: []uint64{7}}}
	if skipped != 1 || !reflect.DeepEqual(handled, want) {
		t.Fatalf("handled %v, skipped %d; want %v, 1", handled, skipped, want)
	}
}

func TestReadFrameLimits(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		input []byte
		want  error
	}{
		{"empty", nil, io.EOF},
		{"short header", []byte{1, 0, 0}, io.ErrUnexpectedEOF},
		{"too large", []byte{1, 0, 0x10, 0, 1}, ErrTooLarge},
		{"truncated payload", []byte{1, 0, 0, 0, 4, 'a'}, io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := ReadFrame(bytes.NewReader(tc.input))
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := NewFrame(Send{Envelope: make([]byte, MaxEnvelope+1)}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("NewFrame(oversized Send): got %v, want ErrTooLarge", err)
	}
	if err := WriteFrame(io.Discard, Frame{Payload: make([]byte, MaxPayload+1)}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("WriteFrame(oversized): got %v, want ErrTooLarge", err)
	}
}

func TestMailboxID(t *testing.T) {
	t.Parallel()
	// SHA-256("ferry mailbox v1" || 32 zero bytes), first 16 bytes, computed
	// independently with Python: hashlib.sha256(b"ferry mailbox v1"+bytes(32)).
	got := MailboxID([32]byte{})
	if want := "f203dd88fef086da0c7beaba7f24bf05"; hex.EncodeToString(got[:]) != want {
		t.Fatalf("MailboxID(zero) = %x, want %s", got, want)
	}
}

func seedFrames(f *testing.F) {
	vf := loadVectors(f)
	for _, v := range vf.Valid {
		env, _ := hex.DecodeString(v.Frame)
		f.Add(env)
	}
	for _, v := range vf.Invalid {
		p, _ := hex.DecodeString(v.Payload)
		f.Add(append([]byte{byte(v.Type)}, p...))
	}
}

// FuzzDecode treats the first byte as the type and the rest as the payload:
// a payload that decodes must marshal back to the same bytes.
func FuzzDecode(f *testing.F) {
	seedFrames(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) == 0 {
			return
		}
		fr := Frame{Type: Type(b[0]), Payload: b[1:]}
		m, err := Decode(fr)
		if err != nil {
			if m != nil {
				t.Fatalf("Decode returned %v with error %v", m, err)
			}
			return
		}
		again, err := NewFrame(m)
		if err != nil {
			t.Fatalf("NewFrame(Decode(x)): %v", err)
		}
		if again.Type != fr.Type || !bytes.Equal(again.Payload, fr.Payload) {
			t.Fatalf("round trip of %v: got %x, want %x", fr.Type, again.Payload, fr.Payload)
		}
	})
}

// FuzzReadFrame reads envelopes from arbitrary bytes: every frame read must
// re-encode to the bytes it came from.
func FuzzReadFrame(f *testing.F) {
	seedFrames(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		for {
			off := len(b) - r.Len()
			fr, err := ReadFrame(r)
			if err != nil {
				return
			}
			env, err := fr.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			end := len(b) - r.Len()
			if !bytes.Equal(env, b[off:end]) {
				t.Fatalf("re-encoded %x, read from %x", env, b[off:end])
			}
			var back Frame
			if err := back.UnmarshalBinary(env); err != nil || back.Type != fr.Type || !bytes.Equal(back.Payload, fr.Payload) {
				t.Fatalf("UnmarshalBinary(MarshalBinary(f)) = %v, %v", back, err)
			}
		}
	})
}
