package wire

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"strings"
	"testing"
)

const blobVectors = "testdata/blob-frames.json"

// blobMessages are the values the blob and fan-out vectors are made from.
func blobMessages() []Message {
	return []Message{
		BlobCreate{ReqID: 1, Key: arr32(0x10), Mailbox: arr16(0x20), Token: arr32(0x40), Size: 1<<31 + 7},
		BlobCreate{ReqID: 2, Flags: BlobReset, Key: arr32(0x11), Mailbox: arr16(0x21), Token: arr32(0x41)},
		BlobStatus{ReqID: 3, Key: arr32(0x10)},
		BlobPut{ReqID: 4, Key: arr32(0x10), Offset: 65552, Data: []byte("ciphertext")},
		BlobState{ReqID: 4, Size: 1<<31 + 7, Stored: 65562},
		BlobState{ReqID: 5, Complete: true, Size: 10, Stored: 10, Digest: arr32(0x80)},
		BlobState{ReqID: 6, Complete: true},
		BlobGet{ReqID: 7, ID: BlobID(arr32(0x10)), Offset: 48, Length: 65552},
		BlobData{ReqID: 7, Offset: 48, Data: []byte("ciphertext")},
		BlobData{ReqID: 8, Offset: 1 << 33},
		Fanout{ID: arr16(1), Recipients: []Recipient{{arr16(0x20), arr32(0x40)}, {arr16(0x30), arr32(0x50)}}, Envelope: []byte("group envelope")},
		FanoutResult{ID: arr16(1)},
		FanoutResult{ID: arr16(1), Failures: []FanoutFailure{{0, CodeDenied}, {7, CodeQuota}}},
	}
}

func blobBadFrames() []badVector {
	z32, z16 := strings.Repeat("00", 32), strings.Repeat("00", 16)
	return []badVector{
		{"create unknown flag", TypeBlobCreate, "00000001" + "02" + z32 + z16 + z32 + "0000000000000001", "unknown flags 0x02"},
		{"create size over limit", TypeBlobCreate, "00000001" + "00" + z32 + z16 + z32 + "0000010004000001", "too large"},
		{"create short", TypeBlobCreate, "00000001" + "00" + z32, "truncated"},
		{"put empty", TypeBlobPut, "00000001" + z32 + "0000000000000000", "truncated"},
		{"put too large", TypeBlobPut, "00000001" + z32 + "0000000000000000" + strings.Repeat("61", MaxBlobData+1), "too large"},
		{"state stored beyond size", TypeBlobState, "00000001" + "00" + "0000000000000001" + "0000000000000002" + z32, "inconsistent state"},
		{"state complete short", TypeBlobState, "00000001" + "01" + "0000000000000002" + "0000000000000001" + z32, "inconsistent state"},
		{"state digest before complete", TypeBlobState, "00000001" + "00" + "0000000000000002" + "0000000000000001" + "01" + strings.Repeat("00", 31), "inconsistent state"},
		{"state unknown flag", TypeBlobState, "00000001" + "02" + "0000000000000000" + "0000000000000000" + z32, "unknown flags 0x02"},
		{"get zero length", TypeBlobGet, "00000001" + z16 + "0000000000000000" + "00000000", "length 0"},
		{"get too long", TypeBlobGet, "00000001" + z16 + "0000000000000000" + "00040001", "length 262145"},
		{"fanout no recipients", TypeFanout, z16 + "0000", "0 recipients"},
		{"fanout too many", TypeFanout, z16 + "0401", "1025 recipients"},
		{"fanout count lies", TypeFanout, z16 + "0002" + z16 + z32, "truncated"},
		{"fanout result order", TypeFanoutResult, z16 + "0002" + "00030002" + "00030004", "increasing index order"},
		{"fanout result count lies", TypeFanoutResult, z16 + "0002" + "00030002", "2 failures in 4 bytes"},
	}
}

func loadBlobVectors(t testing.TB) vectorFile {
	b, err := os.ReadFile(blobVectors)
	if err != nil {
		t.Fatal(err)
	}
	var vf vectorFile
	if err := json.Unmarshal(b, &vf); err != nil {
		t.Fatal(err)
	}
	return vf
}

// TestBlobVectors checks testdata/blob-frames.json as TestVectors checks
// frames.json: each valid frame decodes to its fields and re-encodes to
// the same bytes; each invalid payload fails with its error.
func TestBlobVectors(t *testing.T) {
	if *update {
		vf := vectorFile{Comment: "Ferry blob and fan-out frame vectors (docs/protocol.md section 5.7). frame = type u8 | length u32 | payload, hex. Regenerate with: go test ./wire -run TestBlobVectors -update"}
		for _, m := range blobMessages() {
			f, err := NewFrame(m)
			if err != nil {
				t.Fatal(err)
			}
			env, _ := f.MarshalBinary()
			vf.Valid = append(vf.Valid, goodVector{Type: m.Type().String(), Fields: fieldsJSON(m), Frame: hex.EncodeToString(env)})
		}
		vf.Invalid = blobBadFrames()
		b, err := json.MarshalIndent(vf, "", " ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(blobVectors, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Parallel()
	checkVectors(t, loadBlobVectors(t))
}

func TestEveryBlobTypeHasAVector(t *testing.T) {
	t.Parallel()
	seen := map[Type]bool{}
	for _, m := range blobMessages() {
		seen[m.Type()] = true
	}
	for typ := range blobTypeNames {
		if !seen[typ] || !typ.Known() {
			t.Errorf("no vector for %v, or not known", typ)
		}
		if _, clash := typeNames[typ]; clash {
			t.Errorf("%v clashes with another frame type", typ)
		}
	}
}

func TestBlobID(t *testing.T) {
	t.Parallel()
	// hashlib.sha256(b"ferry blob v1" + bytes(32)).hexdigest()[:32], by Python.
	got := BlobID([32]byte{})
	if want := "20ee11bc183724d9c722a957bfff8165"; hex.EncodeToString(got[:]) != want {
		t.Fatalf("BlobID(zero) = %x, want %s", got, want)
	}
}

// FuzzDecodeBlob is FuzzDecode seeded with the blob and fan-out vectors: a
// payload that decodes marshals back to the same bytes.
func FuzzDecodeBlob(f *testing.F) {
	vf := loadBlobVectors(f)
	for _, v := range vf.Valid {
		env, _ := hex.DecodeString(v.Frame)
		f.Add(byte(env[0]), env[HeaderLen:])
	}
	for _, v := range vf.Invalid {
		p, _ := hex.DecodeString(v.Payload)
		f.Add(byte(v.Type), p)
	}
	f.Fuzz(func(t *testing.T, typ byte, p []byte) {
		if _, ok := blobTypeNames[Type(typ)]; !ok {
			typ = byte(TypeBlobCreate) + typ%8
		}
		m, err := Decode(Frame{Type: Type(typ), Payload: p})
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
		if !bytes.Equal(again.Payload, p) {
			t.Fatalf("round trip of %v: got %x, want %x", Type(typ), again.Payload, p)
		}
	})
}
