package natsbus

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/ferry-im/ferry/relay"
)

// vectors is testdata/relay/bus-announcement.json.
type vectors struct {
	Prefix string `json:"prefix"`
	Valid  []struct {
		Name       string `json:"name"`
		Subject    string `json:"subject"`
		Seq        uint64 `json:"seq"`
		ID         string `json:"id"`
		ReceivedMS int64  `json:"received_ms"`
		Envelope   string `json:"envelope"`
		Payload    string `json:"payload"`
	} `json:"valid"`
	InvalidPayloads []struct {
		Name    string `json:"name"`
		Payload string `json:"payload"`
	} `json:"invalid_payloads"`
	InvalidSubjects []struct {
		Name    string `json:"name"`
		Subject string `json:"subject"`
	} `json:"invalid_subjects"`
}

func loadVectors(t testing.TB) vectors {
	t.Helper()
	b, err := os.ReadFile("../../testdata/relay/bus-announcement.json")
	if err != nil {
		t.Fatal(err)
	}
	var v vectors
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestVectors(t *testing.T) {
	v := loadVectors(t)
	for _, tt := range v.Valid {
		t.Run(tt.Name, func(t *testing.T) {
			t.Parallel()
			want := relay.Envelope{Seq: tt.Seq, ID: [16]byte(unhex(t, tt.ID)), Received: time.UnixMilli(tt.ReceivedMS), Data: unhex(t, tt.Envelope)}
			payload := unhex(t, tt.Payload)
			if got := appendEvent(nil, want); !bytes.Equal(got, payload) {
				t.Errorf("appendEvent = %x, want %x", got, payload)
			}
			got, err := parseEvent(payload)
			if err != nil || got.Seq != want.Seq || got.ID != want.ID || !got.Received.Equal(want.Received) || !bytes.Equal(got.Data, want.Data) {
				t.Errorf("parseEvent = %+v, %v; want %+v", got, err, want)
			}
			mb, err := mailboxOf(v.Prefix, tt.Subject)
			if err != nil || subject(v.Prefix, mb) != tt.Subject {
				t.Errorf("mailboxOf(%q) = %x, %v; it does not round-trip", tt.Subject, mb, err)
			}
		})
	}
	for _, tt := range v.InvalidPayloads {
		t.Run(tt.Name, func(t *testing.T) {
			t.Parallel()
			if _, err := parseEvent(unhex(t, tt.Payload)); err == nil {
				t.Error("parseEvent accepted it")
			}
		})
	}
	for _, tt := range v.InvalidSubjects {
		t.Run(tt.Name, func(t *testing.T) {
			t.Parallel()
			if _, err := mailboxOf(v.Prefix, tt.Subject); err == nil {
				t.Error("mailboxOf accepted it")
			}
		})
	}
}

// FuzzParseEvent checks the round trip: a payload that parses marshals
// back to the same bytes.
func FuzzParseEvent(f *testing.F) {
	v := loadVectors(f)
	for _, tt := range v.Valid {
		f.Add(unhex(f, tt.Payload))
	}
	for _, tt := range v.InvalidPayloads {
		f.Add(unhex(f, tt.Payload))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		env, err := parseEvent(p)
		if err != nil {
			return
		}
		if got := appendEvent(nil, env); !bytes.Equal(got, p) {
			t.Fatalf("parse then marshal: %x, want %x", got, p)
		}
	})
}

// FuzzMailboxOf checks that a subject that parses is the one subject
// gives for its mailbox.
func FuzzMailboxOf(f *testing.F) {
	v := loadVectors(f)
	for _, tt := range v.Valid {
		f.Add(tt.Subject)
	}
	for _, tt := range v.InvalidSubjects {
		f.Add(tt.Subject)
	}
	f.Fuzz(func(t *testing.T, s string) {
		mb, err := mailboxOf("ferry", s)
		if err == nil && subject("ferry", mb) != s {
			t.Fatalf("mailboxOf(%q) = %x, which is subject %q", s, mb, subject("ferry", mb))
		}
	})
}
