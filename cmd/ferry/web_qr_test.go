package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"rsc.io/qr"
)

// TestAppScanInvite: Bob adds Alice by holding her invite's QR code to
// the camera. Chromium's fake camera plays a video the test makes of the
// code (--use-file-for-fake-video-capture); the app reads it (with jsQR
// where, as in headless Chromium on Linux, the browser has no
// BarcodeDetector that reads QR codes) and adds Alice, who then hears
// from Bob.
func TestAppScanInvite(t *testing.T) {
	relay := startRelay(t)
	alice := newUser(t, relay, "alice")
	link := strings.TrimSpace(alice.must("invite"))
	video := filepath.Join(t.TempDir(), "invite.y4m")
	writeQRVideo(t, video, link, 640, 480)
	b := startBrowser(t, chromedp.Flag("use-file-for-fake-video-capture", video))
	bob := b.startApp(bareUser(t, "Bob"), relay.link)
	bob.onboard(relay.link)
	bob.click(`#invite-dialog button.close`)

	bob.click("#add-btn")
	bob.click("#scan-btn")
	bob.until(30*time.Second, "the conversation with alice, added from the QR code", `document.querySelector('#conv-title').textContent === 'alice'`)
	reader := "BarcodeDetector"
	if eval[bool](bob, `typeof window.jsQR === 'function'`) {
		reader = "jsQR"
	}
	t.Logf("the app read the QR code with %s", reader)
	if eval[bool](bob, `!document.querySelector('#add-dialog').open && document.querySelector('#scan-area').hidden`) == false {
		bob.fail("the add dialog or the camera stayed open after the contact was added")
	}
	readUntil(t, alice, "Bob accepted your invite")
	bob.send("I scanned your code")
	readUntil(t, alice, "I scanned your code")
}

// writeQRVideo writes a Y4M video (YUV 4:2:0, two frames of w x h) of
// text's QR code, black on white with its quiet zone, for Chromium's
// fake camera.
func writeQRVideo(t *testing.T, path, text string, w, h int) {
	t.Helper()
	code, err := qr.Encode(text, qr.M)
	if err != nil {
		t.Fatal(err)
	}
	const quiet = 4
	scale := min(w, h) / (code.Size + 2*quiet)
	if scale < 2 {
		t.Fatalf("a QR code of %d modules does not fit %dx%d", code.Size, w, h)
	}
	x0, y0 := (w-code.Size*scale)/2, (h-code.Size*scale)/2
	luma := make([]byte, w*h)
	for y := range h {
		for x := range w {
			luma[y*w+x] = 235 // white
			qx, qy := (x-x0)/scale, (y-y0)/scale
			if x >= x0 && y >= y0 && qx < code.Size && qy < code.Size && code.Black(qx, qy) {
				luma[y*w+x] = 16 // black
			}
		}
	}
	chroma := make([]byte, (w/2)*(h/2))
	for i := range chroma {
		chroma[i] = 128
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	bw := bufio.NewWriter(f)
	fmt.Fprintf(bw, "YUV4MPEG2 W%d H%d F10:1 Ip A1:1 C420jpeg\n", w, h)
	for range 2 {
		bw.WriteString("FRAME\n")
		bw.Write(luma)
		bw.Write(chroma)
		bw.Write(chroma)
	}
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}
