//go:build unix

package session

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"io"
	"math/rand/v2"
	"syscall"
	"testing"

	"golang.org/x/crypto/chacha20poly1305"
)

// Benchmarks of the session extras; figures and commands are in
// docs/benchmarks.md ("Extras:" subsections).

const benchAttachmentSize = 16 << 20

// cpuSeconds returns the process's user+system CPU time. Benchmarks report
// throughput per CPU-second as well as per wall-clock second, because the
// machines these run on are shared: MB/cpu-s is the per-core figure.
func cpuSeconds(b *testing.B) float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

func reportPerCPU(b *testing.B, start float64, bytesPerOp int) {
	if d := cpuSeconds(b) - start; d > 0 {
		b.ReportMetric(float64(b.N)*float64(bytesPerOp)/1e6/d, "MB/cpu-s")
	}
}

// reportCPUPerOp reports process CPU time per operation.
func reportCPUPerOp(b *testing.B, start float64) {
	b.ReportMetric((cpuSeconds(b)-start)*1e9/float64(b.N), "cpu-ns/op")
}

// BenchmarkAttachmentCipher compares the two candidate AEADs on one 64 KiB
// chunk sealed in place, the attachment inner loop.
func BenchmarkAttachmentCipher(b *testing.B) {
	key := make([]byte, 32)
	block, _ := aes.NewCipher(key)
	gcm, _ := cipher.NewGCM(block)
	cc, _ := chacha20poly1305.New(key)
	for _, c := range []struct {
		name string
		aead cipher.AEAD
	}{{"AES-256-GCM", gcm}, {"ChaCha20-Poly1305", cc}} {
		b.Run(c.name, func(b *testing.B) {
			buf := make([]byte, attachmentSealedLen)
			nonce := make([]byte, 12)
			b.SetBytes(AttachmentChunkSize)
			start := cpuSeconds(b)
			for b.Loop() {
				c.aead.Seal(buf[:0], nonce, buf[:AttachmentChunkSize], nil)
			}
			reportPerCPU(b, start, AttachmentChunkSize)
		})
	}
}

func BenchmarkAttachmentEncrypt(b *testing.B) {
	pt := make([]byte, benchAttachmentSize)
	rnd := extrasDetRand("bench attachment")
	b.SetBytes(benchAttachmentSize)
	b.ReportAllocs()
	start := cpuSeconds(b)
	for b.Loop() {
		w, err := NewAttachmentWriter(rnd, io.Discard)
		if err != nil {
			b.Fatal(err)
		}
		w.Write(pt)
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
	}
	reportPerCPU(b, start, benchAttachmentSize)
}

func BenchmarkAttachmentDecrypt(b *testing.B) {
	pt := make([]byte, benchAttachmentSize)
	blob, ptr := encryptAttachment(b, extrasDetRand("bench attachment"), pt, len(pt))
	buf := make([]byte, AttachmentChunkSize)
	b.SetBytes(benchAttachmentSize)
	b.ReportAllocs()
	start := cpuSeconds(b)
	for b.Loop() {
		r, err := NewAttachmentReader(bytes.NewReader(blob), ptr)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{r}, buf); err != nil {
			b.Fatal(err)
		}
	}
	reportPerCPU(b, start, benchAttachmentSize)
}

// BenchmarkAttachmentReadAt reads 4 KiB at random offsets (one chunk
// decrypted per read, as when seeking in a video).
func BenchmarkAttachmentReadAt(b *testing.B) {
	pt := make([]byte, benchAttachmentSize)
	blob, ptr := encryptAttachment(b, extrasDetRand("bench attachment"), pt, len(pt))
	r, err := NewAttachmentReaderAt(bytes.NewReader(blob), ptr)
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 4096)
	b.ReportAllocs()
	start := cpuSeconds(b)
	for b.Loop() {
		if _, err := r.ReadAt(buf, rng.Int64N(benchAttachmentSize-4096)); err != nil {
			b.Fatal(err)
		}
	}
	reportCPUPerOp(b, start)
}

func BenchmarkSeal(b *testing.B) {
	alice, bob, _ := sealedParties(b)
	inner := make([]byte, 1024)
	rnd := extrasDetRand("bench seal")
	b.ReportAllocs()
	start := cpuSeconds(b)
	for b.Loop() {
		if _, err := Seal(rnd, alice, bob.Public(), 1, inner); err != nil {
			b.Fatal(err)
		}
	}
	reportCPUPerOp(b, start)
}

func BenchmarkOpen(b *testing.B) {
	alice, bob, _ := sealedParties(b)
	env, err := Seal(extrasDetRand("bench open"), alice, bob.Public(), 1, make([]byte, 1024))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	start := cpuSeconds(b)
	for b.Loop() {
		if _, _, _, err := Open(bob, env); err != nil {
			b.Fatal(err)
		}
	}
	reportCPUPerOp(b, start)
}

func BenchmarkGroupEncrypt(b *testing.B) {
	net, pubs := newGroupNet(b, "bench", 2)
	g := net.groups[pubs[0]]
	pt := make([]byte, 1024)
	b.ReportAllocs()
	start := cpuSeconds(b)
	for b.Loop() {
		if _, err := g.Encrypt(pt); err != nil {
			b.Fatal(err)
		}
	}
	reportCPUPerOp(b, start)
}

func BenchmarkGroupDecrypt(b *testing.B) {
	net, pubs := newGroupNet(b, "bench", 2)
	a, r := net.groups[pubs[0]], net.groups[pubs[1]]
	pt := make([]byte, 1024)
	msgs := make([][]byte, b.N)
	for i := range msgs {
		msgs[i], _ = a.Encrypt(pt)
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := cpuSeconds(b)
	for i := range b.N {
		if _, err := r.Decrypt(pubs[0], msgs[i]); err != nil {
			b.Fatal(err)
		}
	}
	reportCPUPerOp(b, start)
}

func BenchmarkSafetyNumber(b *testing.B) {
	l, r := mustIdentity(b, "bench l").Public(), mustIdentity(b, "bench r").Public()
	b.ReportAllocs()
	start := cpuSeconds(b)
	for b.Loop() {
		if _, err := SafetyNumber(l, r, nil, nil); err != nil {
			b.Fatal(err)
		}
	}
	reportCPUPerOp(b, start)
}
