// Package media describes a file about to be sent as an attachment: its
// MIME type and, for images and video, a small JPEG thumbnail made on the
// sender's device (Go's image packages for JPEG, PNG and GIF; the
// system's ffmpeg, found at run time, for video; none otherwise).
//
// It is not a codec: it decodes images only to shrink them, refuses ones
// too large to decode safely, and never sends the thumbnail anywhere (the
// caller puts it in the end-to-end encrypted message).
package media

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	_ "image/gif" // decoder
	"image/jpeg"
	_ "image/png" // decoder
	"io"
	"mime"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Thumbnail limits.
const (
	// ThumbSide is the longest side of a thumbnail, in pixels.
	ThumbSide = 160
	// MaxThumbBytes is the largest thumbnail kept.
	MaxThumbBytes = 48 << 10
	// maxPixels bounds the images decoded (a 12,000 x 12,000 photo):
	// a small file may declare a huge image.
	maxPixels = 144 << 20
)

// Type returns the MIME type of the file at path, whose first bytes are
// head: by its extension if known, else by sniffing head.
func Type(path string, head []byte) string {
	if t := mime.TypeByExtension(strings.ToLower(filepath.Ext(path))); t != "" {
		t, _, _ = strings.Cut(t, ";")
		return clean(t)
	}
	t, _, _ := strings.Cut(http.DetectContentType(head), ";")
	return clean(t)
}

// clean keeps a MIME type within what the attachment message allows.
func clean(t string) string {
	t = strings.TrimSpace(t)
	if len(t) > 127 {
		return "application/octet-stream"
	}
	for i := range len(t) {
		if t[i] < 0x20 || t[i] > 0x7e {
			return "application/octet-stream"
		}
	}
	return t
}

// Thumbnail returns a JPEG of at most ThumbSide pixels a side for an
// image or video file, or nil when there is none to make (another type,
// an image too large or damaged, a video without ffmpeg on the system).
func Thumbnail(ctx context.Context, path, mimeType string) []byte {
	var b []byte
	switch {
	case strings.HasPrefix(mimeType, "image/"):
		b = imageThumb(path)
	case strings.HasPrefix(mimeType, "video/"):
		b = videoThumb(ctx, path)
	}
	if len(b) > MaxThumbBytes {
		return nil
	}
	return b
}

func imageThumb(path string) []byte {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	cfg, _, err := image.DecodeConfig(f)
	if err != nil || cfg.Width <= 0 || cfg.Height <= 0 || cfg.Width*cfg.Height > maxPixels {
		return nil
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil
	}
	img, _, err := image.Decode(f)
	if err != nil {
		return nil
	}
	return encode(Shrink(img, ThumbSide))
}

func encode(img image.Image) []byte {
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 70}); err != nil {
		return nil
	}
	return buf.Bytes()
}

// Shrink scales img down to fit side x side, averaging the pixels each
// output pixel covers; a smaller image is returned as it is (on white, as
// JPEG has no transparency).
func Shrink(img image.Image, side int) image.Image {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	scale := max(float64(w)/float64(side), float64(h)/float64(side), 1)
	tw, th := max(1, int(float64(w)/scale)), max(1, int(float64(h)/scale))
	out := image.NewRGBA(image.Rect(0, 0, tw, th))
	draw.Draw(out, out.Bounds(), image.White, image.Point{}, draw.Src)
	for y := range th {
		y0, y1 := b.Min.Y+y*h/th, b.Min.Y+max((y+1)*h/th, y*h/th+1)
		for x := range tw {
			x0, x1 := b.Min.X+x*w/tw, b.Min.X+max((x+1)*w/tw, x*w/tw+1)
			out.Set(x, y, average(img, x0, y0, x1, y1))
		}
	}
	return out
}

// average is the mean colour of img over [x0,x1) x [y0,y1), composited on
// white.
func average(img image.Image, x0, y0, x1, y1 int) color.RGBA {
	var r, g, bl, n uint64
	for y := y0; y < y1; y++ {
		for x := x0; x < x1; x++ {
			cr, cg, cb, ca := img.At(x, y).RGBA()
			white := 0xffff - ca
			r += uint64(cr + white)
			g += uint64(cg + white)
			bl += uint64(cb + white)
			n++
		}
	}
	return color.RGBA{uint8(r / n >> 8), uint8(g / n >> 8), uint8(bl / n >> 8), 0xff}
}

// videoThumb asks the system's ffmpeg, if any, for a frame a second in
// (or the first frame of a shorter video).
func videoThumb(ctx context.Context, path string) []byte {
	ffmpeg, err := exec.LookPath("ffmpeg")
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for _, at := range []string{"1", "0"} {
		cmd := exec.CommandContext(ctx, ffmpeg, "-hide_banner", "-loglevel", "error", "-ss", at, "-i", path,
			"-frames:v", "1", "-vf", fmt.Sprintf("scale=%d:%d:force_original_aspect_ratio=decrease", ThumbSide, ThumbSide),
			"-f", "image2", "-c:v", "mjpeg", "-q:v", "6", "pipe:1")
		if out, err := cmd.Output(); err == nil && len(out) > 0 {
			return out
		}
	}
	return nil
}
