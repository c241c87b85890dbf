package https

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/ferry-im/ferry/censor"
	"github.com/ferry-im/ferry/censor/censortest"
)

// The capture of Debian's Chromium that the spec in hello.go is kept
// equal to. To refresh it after Chromium changes:
//
//	go test ./censor -run 'TestChromiumHello$' -chromium-update
//	go test ./transport/https -run 'Chromium|Capture' -v
//
// The second command prints every list in which our hello differs from the
// new capture and from the live browser; edit hello.go until it passes.
const (
	chromiumHelloFile = "../../censor/testdata/chromium-hello.bin"
	chromiumJA4File   = "../../censor/testdata/chromium-ja4.txt"
)

// isGREASE reports whether v is an RFC 8701 GREASE value.
func isGREASE(v uint16) bool { return v&0x0f0f == 0x0a0a && v>>8 == v&0xff }

// greaseless maps every GREASE value to 0x0a0a, so that lists compare
// with their GREASE positions but not the random values.
func greaseless(v []uint16) []uint16 {
	out := make([]uint16, len(v))
	for i, x := range v {
		if isGREASE(x) {
			x = 0x0a0a
		}
		out[i] = x
	}
	return out
}

// staticExtensions are the extensions whose bodies are the same on every
// connection of one Chromium (server_name depends only on the name).
var staticExtensions = []uint16{0x0000, 0x0005, 0x000b, 0x0010, 0x0012, 0x0017, 0x001b, 0x0023, 0x002d, 0x44cd, 0xca34, 0xff01}

// diffHellos lists every way got differs from want, a Chromium hello:
// list by list with GREASE positions, the extension set (Chromium permutes
// the order on every connection) with GREASE first and last, the bodies of
// the extensions that do not vary, the sizes of those that do, and JA4.
func diffHellos(got, want *censor.ClientHello) []string {
	var d []string
	cmp := func(what string, g, w any) {
		if fmt.Sprint(g) != fmt.Sprint(w) {
			d = append(d, fmt.Sprintf("%s: got %v, want %v", what, g, w))
		}
	}
	hex := func(v []uint16) string { return fmt.Sprintf("%04x", v) }
	cmp("record version", fmt.Sprintf("%04x", got.RecordVersion), fmt.Sprintf("%04x", want.RecordVersion))
	cmp("legacy version", fmt.Sprintf("%04x", got.LegacyVersion), fmt.Sprintf("%04x", want.LegacyVersion))
	cmp("session id length", len(got.SessionID), len(want.SessionID))
	cmp("cipher suites", hex(greaseless(got.CipherSuites)), hex(greaseless(want.CipherSuites)))
	cmp("compression methods", got.CompressionMethods, want.CompressionMethods)
	cmp("extension set", hex(slices.Sorted(slices.Values(greaseless(got.Extensions)))), hex(slices.Sorted(slices.Values(greaseless(want.Extensions)))))
	for _, h := range []*censor.ClientHello{got, want} {
		if n := len(h.Extensions); n < 2 || !isGREASE(h.Extensions[0]) || !isGREASE(h.Extensions[n-1]) {
			d = append(d, fmt.Sprintf("extensions %04x do not start and end with GREASE", h.Extensions))
		}
	}
	cmp("supported groups", hex(greaseless(got.SupportedGroups)), hex(greaseless(want.SupportedGroups)))
	cmp("key share groups", hex(greaseless(got.KeyShareGroups)), hex(greaseless(want.KeyShareGroups)))
	cmp("signature algorithms", hex(greaseless(got.SignatureAlgorithms)), hex(greaseless(want.SignatureAlgorithms)))
	cmp("supported versions", hex(greaseless(got.SupportedVersions)), hex(greaseless(want.SupportedVersions)))
	cmp("ALPN", got.ALPN, want.ALPN)
	for _, e := range staticExtensions {
		cmp(fmt.Sprintf("extension %04x body", e), fmt.Sprintf("%x", extData(got, e)), fmt.Sprintf("%x", extData(want, e)))
	}
	cmp("key share sizes", keyShareSizes(extData(got, 0x0033)), keyShareSizes(extData(want, 0x0033)))
	cmp("last GREASE extension body", fmt.Sprintf("%x", got.ExtensionData[len(got.ExtensionData)-1]), fmt.Sprintf("%x", want.ExtensionData[len(want.ExtensionData)-1]))
	gech, wech := extData(got, extECH), extData(want, extECH)
	if len(gech) < 10 || len(wech) < 10 {
		d = append(d, "no encrypted_client_hello extension")
	} else {
		cmp("ECH cipher suite and enc length", fmt.Sprintf("%x %x", gech[:5], gech[6:8]), fmt.Sprintf("%x %x", wech[:5], wech[6:8]))
		if n := len(gech) - 42; !slices.Contains(chromiumECHPayloadLens, n) {
			d = append(d, fmt.Sprintf("ECH payload %d bytes, want one of %v", n, chromiumECHPayloadLens))
		}
	}
	// The hello's size differs from Chromium's only by the name and the
	// ECH payload.
	size := func(h *censor.ClientHello) int { return h.Len - len(h.SNI) - len(extData(h, extECH)) }
	cmp("record size less SNI and ECH", size(got), size(want))
	cmp("JA4", got.JA4(), want.JA4())
	return d
}

func extData(h *censor.ClientHello, typ uint16) []byte {
	if i := slices.Index(h.Extensions, typ); i >= 0 {
		return h.ExtensionData[i]
	}
	return nil
}

// keyShareSizes lists the key_exchange lengths of a key_share body.
func keyShareSizes(b []byte) []int {
	var out []int
	if len(b) < 2 {
		return nil
	}
	for b = b[2:]; len(b) >= 4; {
		n := int(b[2])<<8 | int(b[3])
		out = append(out, n)
		b = b[min(len(b), 4+n):]
	}
	return out
}

// ourHellos dials a capture server n times with the https dialer and
// returns the hellos and h2 openings it sent.
func ourHellos(t *testing.T, n int) ([]*censor.ClientHello, []*capture) {
	t.Helper()
	addr, cs := startCaptureServer(t)
	d := New(Config{})
	for range n {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		c, err := d.Dial(ctx, Target{Addr: addr, SNI: "www.example.com", Pin: cs.pin, Secret: testSecret})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		// The server answers the request with its page: the upgrade is
		// refused, which is all a capture needs.
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		c.Read(make([]byte, 1))
		c.Close()
	}
	caps := cs.captures()
	var hellos []*censor.ClientHello
	for _, c := range caps {
		hellos = append(hellos, parseHello(t, c.hello()))
	}
	return hellos, caps
}

func TestHelloMatchesCapture(t *testing.T) {
	b, err := os.ReadFile(chromiumHelloFile)
	if err != nil {
		t.Fatal(err)
	}
	want := parseHello(t, b)
	ja4, err := os.ReadFile(chromiumJA4File)
	if err != nil {
		t.Fatal(err)
	}
	if got := want.JA4(); got != strings.TrimSpace(string(ja4)) {
		t.Fatalf("capture's JA4 %s, want %s from %s", got, ja4, chromiumJA4File)
	}
	hellos, _ := ourHellos(t, 8)
	orders := map[string]bool{}
	for _, h := range hellos {
		for _, d := range diffHellos(h, want) {
			t.Errorf("ours vs %s: %s", chromiumHelloFile, d)
		}
		orders[fmt.Sprintf("%04x", h.Extensions)] = true
	}
	if len(orders) < 2 {
		t.Errorf("%d hellos had %d extension orders; Chromium permutes them on every connection", len(hellos), len(orders))
	}
}

// TestHelloMatchesChromium captures a live headless Chromium's hello and
// HTTP/2 opening in the same run as ours and compares them.
func TestHelloMatchesChromium(t *testing.T) {
	chromium := censortest.ChromiumPath(t)
	addr, cs := startCaptureServer(t)
	_, port, _ := net.SplitHostPort(addr)
	if _, err := censortest.RunChromium(t.Context(), t, chromium, "https://www.example.com:"+port+"/"); err != nil {
		t.Fatal(err)
	}
	var live *capture
	for _, c := range cs.captures() {
		if h := parseHello(t, c.hello()); h.SNI == "www.example.com" && len(c.h2()) > 0 {
			live = c
			break
		}
	}
	if live == nil {
		t.Fatalf("no hello with an HTTP/2 request from %s", censortest.ChromiumVersion(chromium))
	}
	want := parseHello(t, live.hello())
	t.Logf("%s: JA4 %s", censortest.ChromiumVersion(chromium), want.JA4())
	hellos, ours := ourHellos(t, 3)
	for _, h := range hellos {
		for _, d := range diffHellos(h, want) {
			t.Errorf("ours vs live Chromium: %s", d)
		}
	}
	t.Run("http2", func(t *testing.T) {
		wantH2, err := parseH2Opening(live.h2())
		if err != nil {
			t.Fatalf("chromium: %v", err)
		}
		gotH2, err := parseH2Opening(ours[0].h2())
		if err != nil {
			t.Fatalf("ours: %v", err)
		}
		for _, d := range diffH2(gotH2, wantH2) {
			t.Error(d)
		}
	})
}

// diffH2 lists how our opening differs from Chromium's navigation. Ours
// leaves the stream open (its body is the tunnel), carries a cookie and
// goes to the secret path; the live browser is headless, which it says
// in its user-agent.
func diffH2(got, want *h2Opening) []string {
	var d []string
	cmp := func(what string, g, w any) {
		if fmt.Sprint(g) != fmt.Sprint(w) {
			d = append(d, fmt.Sprintf("%s: got %v, want %v", what, g, w))
		}
	}
	cmp("frames", got.frames, want.frames)
	cmp("settings", got.settings, want.settings)
	cmp("window update", got.windowUpdate, want.windowUpdate)
	cmp("priority", got.priority, want.priority)
	cmp("flags less END_STREAM", got.flags&^http2.FlagHeadersEndStream, want.flags&^http2.FlagHeadersEndStream)
	var gn, wn []string
	for _, f := range got.fields {
		if f.Name != "cookie" {
			gn = append(gn, f.Name)
		}
	}
	for _, f := range want.fields {
		wn = append(wn, f.Name)
	}
	cmp("header order", gn, wn)
	for _, w := range want.fields {
		w.Value = strings.ReplaceAll(w.Value, "HeadlessChrome/", "Chrome/")
		switch w.Name {
		case ":authority", ":path":
			continue
		}
		for _, g := range got.fields {
			if g.Name == w.Name {
				cmp("header "+w.Name, g.Value, w.Value)
			}
		}
	}
	// Our HPACK encoder must encode Chromium's headers byte for byte as
	// Chromium did.
	var buf writeBuffer
	enc := newHPACK(&buf)
	for _, f := range want.fields {
		enc.WriteField(f)
	}
	if !bytes.Equal(buf, want.block) {
		d = append(d, fmt.Sprintf("HPACK: our encoding of Chromium's headers is %d bytes, Chromium's %d", len(buf), len(want.block)))
	}
	return d
}
