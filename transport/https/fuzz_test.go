package https

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/ferry-im/ferry/link"
)

// FuzzTargetOf: any endpoint parameters give a target or an error, never a
// panic; the endpoints a Server writes read back as its parameters.
func FuzzTargetOf(f *testing.F) {
	s := &Server{cfg: ServerConfig{Secret: testSecret, SNI: "www.example.com", Pin: make([]byte, 32)}}
	ep := s.Endpoint("relay.example.org:443")
	f.Add(ep.String())
	f.Add("https=127.0.0.1:443,key=short")
	f.Add("https=[::1]:443,pin=AAAA,key=" + testSecret.String())
	f.Fuzz(func(t *testing.T, text string) {
		e, err := link.ParseEndpoint(text)
		if err != nil {
			return
		}
		tg, err := TargetOf(e)
		if err != nil {
			return
		}
		if tg.Addr != e.Addr {
			t.Fatalf("target address %q, endpoint %q", tg.Addr, e.Addr)
		}
		if key, _ := e.Param(ParamKey); key != tg.Secret.String() {
			t.Fatalf("secret %s does not round-trip to %s", tg.Secret, key)
		}
	})
	if tg, err := TargetOf(ep); err != nil || tg.Secret != testSecret || tg.SNI != "www.example.com" || len(tg.Pin) != 32 {
		f.Fatalf("TargetOf(%s) = %+v, %v", ep, tg, err)
	}
}

// FuzzClientFrames: whatever a server sends after TLS, the client's
// HTTP/2 reader ends the stream with data or an error, never a panic or a
// hang.
func FuzzClientFrames(f *testing.F) {
	var seed writeBuffer
	fr := http2.NewFramer(&seed, nil)
	fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
	var block writeBuffer
	enc := hpack.NewEncoder(&block)
	enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block, EndHeaders: true})
	fr.WriteData(1, false, []byte("hello"))
	fr.WriteWindowUpdate(0, 1000)
	fr.WritePing(false, [8]byte{1})
	fr.WriteData(1, true, nil)
	f.Add([]byte(seed))
	f.Add([]byte{0, 0, 0, 4, 0, 0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		client, server := net.Pipe()
		go io.Copy(io.Discard, server) // the opening and any acks
		c := newH2Conn(client)
		if err := c.start(chromiumRequest("www.example.com", "/", "")); err != nil {
			t.Fatal(err)
		}
		go func() {
			server.Write(b)
			server.Close()
		}()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := io.Copy(io.Discard, c)
		if n > int64(len(b)) {
			t.Fatalf("read %d bytes from %d", n, len(b))
		}
		if isTimeoutErr(err) {
			t.Fatalf("the reader hung: %v", err)
		}
		c.Close()
	})
}

func isTimeoutErr(err error) bool {
	var te timeoutError
	return errors.As(err, &te)
}
