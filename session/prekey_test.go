package session

import (
	"bytes"
	"errors"
	"testing"
)

func TestBundleRoundTrip(t *testing.T) {
	t.Parallel()
	p := newParty(t, newTestRand("bundle round trip"), 1)
	for _, oneTime := range []bool{true, false} {
		b := p.ps.Bundle(p.id.Public(), oneTime)
		raw, _ := b.MarshalBinary()
		want := 1 + 32 + X25519RecordLen + KEMRecordLen
		if oneTime {
			want += X25519RecordLen
		}
		if len(raw) != want {
			t.Fatalf("one-time %v: %d bytes, want %d", oneTime, len(raw), want)
		}
		got, err := ParseBundle(raw)
		if err != nil {
			t.Fatal(err)
		}
		if (got.OneTimePrekey != nil) != oneTime || got.KEMPrekey.LastResort == oneTime {
			t.Fatalf("one-time %v: parsed %+v", oneTime, got.OneTimePrekey)
		}
		if err := got.verifyErr(); err != nil {
			t.Fatal(err)
		}
		raw2, _ := got.MarshalBinary()
		if !bytes.Equal(raw, raw2) {
			t.Fatal("marshal(parse(b)) != b")
		}
	}
	raw, _ := p.ps.Bundle(p.id.Public(), true).MarshalBinary()
	for _, bad := range [][]byte{nil, raw[:33], raw[:len(raw)-1], append(bytes.Clone(raw), 0), append([]byte{2}, raw[1:]...)} {
		if _, err := ParseBundle(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("%d bytes: got %v, want ErrMalformed", len(bad), err)
		}
	}
}

func TestRecordsMatchBundle(t *testing.T) {
	t.Parallel()
	p := newParty(t, newTestRand("records"), 2)
	recs := p.ps.Records()
	if len(recs.OneTime) != 2 || len(recs.KEM) != 2 {
		t.Fatalf("%d and %d one-time records, want 2 and 2", len(recs.OneTime), len(recs.KEM))
	}
	for _, r := range append(append([][]byte{recs.Signed}, recs.OneTime...), recs.KEM...) {
		if len(r) != X25519RecordLen && len(r) != KEMRecordLen {
			t.Fatalf("record of %d bytes", len(r))
		}
	}
	pub := p.id.Public()
	// Relay-assembled bundles with any one-time records verify.
	for i := range 2 {
		raw := append(append(append([]byte{bundleVersion}, pub[:]...), recs.Signed...), recs.OneTime[i]...)
		raw = append(raw, recs.KEM[1-i]...)
		b, err := ParseBundle(raw)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.verifyErr(); err != nil {
			t.Fatal(err)
		}
	}
	raw := append(append([]byte{bundleVersion}, pub[:]...), recs.Signed...)
	b, err := ParseBundle(append(raw, recs.LastResort...))
	if err != nil || b.verifyErr() != nil || !b.KEMPrekey.LastResort {
		t.Fatalf("last-resort bundle: %v", err)
	}
	// A record in the wrong slot does not parse.
	if _, err := ParseBundle(append(bytes.Clone(raw), recs.OneTime[0]...)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("bundle without kem record: got %v, want ErrMalformed", err)
	}
}

// FuzzParseBundle: ParseBundle either fails or round-trips exactly, and
// verification never panics.
func FuzzParseBundle(f *testing.F) {
	var v prekeyVector
	loadJSON(f, "testdata/core-prekeys.json", &v)
	f.Add([]byte(v.BundleOneTime))
	f.Add([]byte(v.BundleLastResort))
	f.Fuzz(func(t *testing.T, raw []byte) {
		b, err := ParseBundle(raw)
		if err != nil {
			if b != nil {
				t.Fatal("error with a non-nil bundle")
			}
			return
		}
		got, _ := b.MarshalBinary()
		if !bytes.Equal(got, raw) {
			t.Fatalf("round trip: got %x, want %x", got, raw)
		}
		_ = b.verifyErr()
	})
}

func (b *Bundle) verifyErr() error {
	_, err := b.verify()
	return err
}
