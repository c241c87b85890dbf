package proxy

import (
	"bufio"
	"bytes"
	"strings"
	"testing"
)

// FuzzSocksReply reads arbitrary bytes as a SOCKS5 CONNECT reply: it never
// panics, and a reply it accepts is consumed exactly (re-encoding its
// parts gives a prefix of the input).
func FuzzSocksReply(f *testing.F) {
	f.Add([]byte{5, 0, 0, 1, 127, 0, 0, 1, 0x1f, 0x90})
	f.Add([]byte{5, 5, 0, 3, 4, 'h', 'o', 's', 't', 0, 80})
	f.Add(append([]byte{5, 0, 0, 4}, make([]byte, 18)...))
	f.Add([]byte{5, 0, 0, 9})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		code, err := readSocksReply(r)
		if err != nil {
			return
		}
		used := len(b) - r.Len()
		if b[1] != code || used < 7 {
			t.Fatalf("accepted reply code %d using %d bytes", code, used)
		}
	})
}

// FuzzConnectResponse reads arbitrary bytes as an HTTP response to
// CONNECT: it never panics and never reads past the header limit.
func FuzzConnectResponse(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 Connection established\r\n\r\nxyz"))
	f.Add([]byte("HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 3\r\n\r\nabc"))
	f.Add([]byte("HTTP/1.0 502 Bad Gateway\r\n\r\n"))
	f.Add([]byte("\x05\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		status, err := readConnectResponse(bufio.NewReader(bytes.NewReader(b)))
		if err == nil && (status < 0 || status > 999) {
			t.Fatalf("accepted status %d", status)
		}
	})
}

// FuzzParseURL parses arbitrary proxy URLs: an accepted one round-trips
// through its String (with the password, which String leaves out, put
// back) to the same Config.
func FuzzParseURL(f *testing.F) {
	for _, s := range []string{"socks5://127.0.0.1:9050", "socks5h://u:p@h:1080", "http://[::1]:3128/", "http://u%40x:p%3A@h:8080", "ftp://h:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseURL(s)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error %q", err)
			}
			return
		}
		again, err := ParseURL(c.String())
		if err != nil {
			t.Fatalf("ParseURL(%q) = %+v, but its String %q does not parse: %v", s, c, c.String(), err)
		}
		again.Password = c.Password
		if again != c {
			t.Fatalf("round trip: %+v then %+v", c, again)
		}
	})
}
