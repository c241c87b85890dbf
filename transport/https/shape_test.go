package https

import (
	"bytes"
	"io"
	"net"
	"testing"
)

func TestShapeRoundTrip(t *testing.T) {
	a, b := net.Pipe()
	ca := newShapedConn(a, true, [32]byte{1})
	cb := newShapedConn(b, false, [32]byte{2})
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
