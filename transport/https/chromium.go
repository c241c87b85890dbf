package https

import (
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// How Debian's Chromium 156 opens an HTTP/2 connection and asks for a page
// it was told to open (a typed URL), captured from the browser by
// TestHTTP2MatchesChromium, which fails when Chromium changes. The client
// sends, in one write after the TLS handshake: the connection preface,
// this SETTINGS frame (these settings in this order), a WINDOW_UPDATE of
// the connection by chromiumWindowUpdate, and the request's HEADERS frame
// on stream 1 with PRIORITY (exclusive, depends on stream 0, weight 256)
// carrying these headers in this order, HPACK-encoded with Huffman strings
// and incremental indexing (as golang.org/x/net/http2/hpack encodes them,
// byte for byte).
var chromiumSettings = []http2.Setting{
	{ID: http2.SettingHeaderTableSize, Val: 65536},
	{ID: http2.SettingEnablePush, Val: 0},
	{ID: http2.SettingInitialWindowSize, Val: 6291456},
	{ID: http2.SettingMaxHeaderListSize, Val: 262144},
}

const (
	chromiumWindowUpdate   = 15663105
	chromiumStreamWindow   = 6291456                      // SETTINGS_INITIAL_WINDOW_SIZE
	chromiumConnWindow     = 65535 + chromiumWindowUpdate // after the WINDOW_UPDATE
	chromiumPriorityWeight = 255                          // on the wire: weight 256
	chromiumUserAgent      = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36"
)

// chromiumRequest returns the header fields of a navigation to
// https://authority/path, pseudo-headers first, in Chromium's order. A
// cookie goes after accept-language, where Chromium puts it.
func chromiumRequest(authority, path, cookie string) []hpack.HeaderField {
	h := []hpack.HeaderField{
		{Name: ":method", Value: "GET"},
		{Name: ":authority", Value: authority},
		{Name: ":scheme", Value: "https"},
		{Name: ":path", Value: path},
		{Name: "sec-ch-ua", Value: `"Not:A-Brand";v="8", "Chromium";v="156"`},
		{Name: "sec-ch-ua-mobile", Value: "?0"},
		{Name: "sec-ch-ua-platform", Value: `"Linux"`},
		{Name: "upgrade-insecure-requests", Value: "1"},
		{Name: "user-agent", Value: chromiumUserAgent},
		{Name: "accept", Value: "text/html,application/xhtml+xml,application/xml;q=0.9,image/jxl,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"},
		{Name: "sec-fetch-site", Value: "none"},
		{Name: "sec-fetch-mode", Value: "navigate"},
		{Name: "sec-fetch-user", Value: "?1"},
		{Name: "sec-fetch-dest", Value: "document"},
		{Name: "accept-encoding", Value: "gzip, deflate, br, zstd"},
		{Name: "accept-language", Value: "en-US,en;q=0.9"},
	}
	if cookie != "" {
		h = append(h, hpack.HeaderField{Name: "cookie", Value: cookie})
	}
	return append(h, hpack.HeaderField{Name: "priority", Value: "u=0, i"})
}
