package https

import (
	"bytes"
	"io"
	"net"
	"testing"
)

func TestShapeRoundTrip(t *testing.T) {
	a, b := net.Pipe()
	ca := newShapedConn(a, true, [32]byte{1}, shapeFrames)
	cb := newShapedConn(b, false, [32]byte{2}, shapeFrames)
	want := make([]byte, 300000)
	for i := range want {
		want[i] = byte(i * 7)
	}
	go func() {
		ca.Write(want[:98])
		ca.Write(want[98:])
		ca.Close()
	}()
	got, err := io.ReadAll(cb)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes, differ", len(got))
	}
}

// FuzzShapedRead: reading any byte stream through the shaping layer never
// panics or returns more than it was given; frames written by the layer
// read back as the data.
func FuzzShapedRead(f *testing.F) {
	var frames []byte
	for i := range shapeFrames {
		frames = appendShapeFrame(frames, []byte{byte(i), 1, 2}, i*3)
	}
	f.Add(append(frames, "raw tail"...))
	f.Add([]byte{0xff, 0xff, 0, 0})
	f.Add([]byte{0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		a, z := net.Pipe()
		go func() { a.Write(b); a.Close() }()
		got, _ := io.ReadAll(newShapedConn(z, false, [32]byte{}, shapeFrames))
		if len(got) > len(b) {
			t.Fatalf("read %d bytes from %d", len(got), len(b))
		}
	})
}
