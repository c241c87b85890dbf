package session

import (
	"crypto/rand"
	"syscall"
	"testing"
	"time"
)

// coreCPUTime returns the process's user+system CPU time. Benchmarks report
// ops per CPU-second from it: on the shared machine that is the per-core
// figure, much less distorted by other load than wall time.
func coreCPUTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// coreReportPerCPU adds an ops/cpu-s metric for b.N operations since start.
func coreReportPerCPU(b *testing.B, start time.Duration) {
	if d := coreCPUTime(b) - start; d > 0 {
		b.ReportMetric(float64(b.N)/d.Seconds(), "ops/cpu-s")
	}
}

// benchPair returns a session pair past the initial message, with crypto/rand.
func benchPair(b *testing.B) (alice, bob *Session) {
	b.Helper()
	alice, bob = newPair(b, newTestRand("bench"))
	alice.Rand, bob.Rand = rand.Reader, rand.Reader
	m, _ := bob.Encrypt([]byte("r"), nil)
	if _, err := alice.Decrypt(m, nil); err != nil {
		b.Fatal(err)
	}
	return alice, bob
}

// BenchmarkRatchet1KiB is one 1 KiB message encrypted by alice and
// decrypted by bob, on a steady chain (no DH ratchet step).
func BenchmarkRatchet1KiB(b *testing.B) {
	alice, bob := benchPair(b)
	pt := make([]byte, 1024)
	ad := []byte("ad")
	b.SetBytes(int64(len(pt)))
	b.ReportAllocs()
	defer coreReportPerCPU(b, coreCPUTime(b))
	for b.Loop() {
		m, err := alice.Encrypt(pt, ad)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := bob.Decrypt(m, ad); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRatchet1KiBPingPong alternates directions, so every message
// takes a DH ratchet step (one X25519 key generation and two agreements
// at the receiver).
func BenchmarkRatchet1KiBPingPong(b *testing.B) {
	alice, bob := benchPair(b)
	pt := make([]byte, 1024)
	b.SetBytes(int64(len(pt)))
	b.ReportAllocs()
	defer coreReportPerCPU(b, coreCPUTime(b))
	from, to := alice, bob
	for b.Loop() {
		m, err := from.Encrypt(pt, nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := to.Decrypt(m, nil); err != nil {
			b.Fatal(err)
		}
		from, to = to, from
	}
}

// BenchmarkPQXDH is a full session setup, both sides: ParseBundle of the
// bundle's bytes as the relay serves them (so nothing computed from a
// bundle carries over between rounds), Initiate (bundle verification,
// seven X25519 with a one-time prekey, six without, ML-KEM encapsulation),
// the first Encrypt, and Respond (ML-KEM decapsulation, seven or six
// X25519, including the first DH ratchet step, and decryption).
func BenchmarkPQXDH(b *testing.B) {
	for _, oneTime := range []bool{true, false} {
		name := "one-time"
		if !oneTime {
			name = "last-resort"
		}
		b.Run(name, func(b *testing.B) {
			r := newTestRand("bench pqxdh")
			a := newParty(b, r, 1)
			p := newParty(b, r, 1)
			bundleBytes, err := p.ps.Bundle(p.id.Public(), oneTime).MarshalBinary()
			if err != nil {
				b.Fatal(err)
			}
			ot, kem := p.ps.oneTime[0], p.ps.kem[0]
			pt := []byte("hello")
			b.ReportAllocs()
			defer coreReportPerCPU(b, coreCPUTime(b))
			for b.Loop() {
				bundle, err := ParseBundle(bundleBytes)
				if err != nil {
					b.Fatal(err)
				}
				s, err := Initiate(rand.Reader, a.id, bundle)
				if err != nil {
					b.Fatal(err)
				}
				m, err := s.Encrypt(pt, nil)
				if err != nil {
					b.Fatal(err)
				}
				if _, _, _, err := Respond(rand.Reader, p.id, p.ps, m, nil); err != nil {
					b.Fatal(err)
				}
				// Put the consumed one-time prekeys back for the next round.
				p.ps.oneTime, p.ps.kem = append(p.ps.oneTime[:0], ot), append(p.ps.kem[:0], kem)
			}
		})
	}
}

// BenchmarkX25519 is one X25519 scalar multiplication by crypto/ecdh (key
// generation and each agreement cost one such ladder), the unit of the
// PQXDH benchmark's floor: 14 of them per setup with a one-time prekey, 12
// without (docs/benchmarks.md, Core).
func BenchmarkX25519(b *testing.B) {
	priv, err := generateX25519(newTestRand("bench x25519"))
	if err != nil {
		b.Fatal(err)
	}
	peer := priv.PublicKey().Bytes()
	b.ReportAllocs()
	defer coreReportPerCPU(b, coreCPUTime(b))
	for b.Loop() {
		if _, err := x25519(priv, peer); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkStateRoundTrip(b *testing.B) {
	alice, _ := benchPair(b)
	b.ReportAllocs()
	for b.Loop() {
		st, _ := alice.MarshalBinary()
		var s Session
		if err := s.UnmarshalBinary(st); err != nil {
			b.Fatal(err)
		}
	}
}
