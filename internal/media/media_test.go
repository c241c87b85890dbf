package media

import (
	"bytes"
	"context"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"os"
	"path/filepath"
	"testing"
)

func writeImage(t *testing.T, name string, w, h int, enc func(*os.File, image.Image) error) string {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), 0x80, 0xff})
		}
	}
	p := filepath.Join(t.TempDir(), name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := enc(f, img); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestThumbnails(t *testing.T) {
	for _, tc := range []struct {
		name       string
		w, h       int
		enc        func(*os.File, image.Image) error
		wantW, wan int
	}{
		{"photo.jpg", 1200, 800, func(f *os.File, i image.Image) error { return jpeg.Encode(f, i, nil) }, 160, 106},
		{"shot.png", 300, 600, func(f *os.File, i image.Image) error { return png.Encode(f, i) }, 80, 160},
		{"anim.gif", 50, 40, func(f *os.File, i image.Image) error { return gif.Encode(f, i, nil) }, 50, 40},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeImage(t, tc.name, tc.w, tc.h, tc.enc)
			typ := Type(p, nil)
			th := Thumbnail(context.Background(), p, typ)
			if th == nil {
				t.Fatalf("no thumbnail for %s (%s)", tc.name, typ)
			}
			cfg, err := jpeg.DecodeConfig(bytes.NewReader(th))
			if err != nil || cfg.Width != tc.wantW || cfg.Height != tc.wan {
				t.Fatalf("thumbnail %dx%d (%v), want %dx%d", cfg.Width, cfg.Height, err, tc.wantW, tc.wan)
			}
		})
	}
}

func TestNoThumbnail(t *testing.T) {
	dir := t.TempDir()
	text := filepath.Join(dir, "notes.txt")
	os.WriteFile(text, []byte("hello"), 0o600)
	broken := filepath.Join(dir, "broken.png")
	os.WriteFile(broken, []byte("\x89PNG\r\n\x1a\nnot really"), 0o600)
	// A PNG header declaring 100,000 x 100,000 pixels: refused before decoding.
	bomb := filepath.Join(dir, "bomb.png")
	var b bytes.Buffer
	png.Encode(&b, image.NewGray(image.Rect(0, 0, 1, 1)))
	hdr := b.Bytes()
	copy(hdr[16:], []byte{0, 1, 0x86, 0xa0, 0, 1, 0x86, 0xa0})
	os.WriteFile(bomb, hdr, 0o600)
	for _, p := range []string{text, broken, bomb} {
		if th := Thumbnail(context.Background(), p, Type(p, nil)); th != nil {
			t.Errorf("%s: got a thumbnail", filepath.Base(p))
		}
	}
}

func TestType(t *testing.T) {
	for _, tc := range []struct {
		path string
		head []byte
		want string
	}{
		{"a.JPG", nil, "image/jpeg"},
		{"report.pdf", nil, "application/pdf"},
		{"noext", []byte("%PDF-1.7"), "application/pdf"},
		{"noext", []byte{0, 1, 2, 3}, "application/octet-stream"},
	} {
		if got := Type(tc.path, tc.head); got != tc.want {
			t.Errorf("Type(%s) = %q, want %q", tc.path, got, tc.want)
		}
	}
}
