package transport_test

import (
	"context"
	"errors"
	"io"
	"reflect"
	"testing"

	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/transport"
	"github.com/ferry-im/ferry/transport/transporttest"
)

func TestRegistry(t *testing.T) {
	t.Parallel()
	var mem transporttest.Network
	l, err := mem.Listen("relay:1")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
	r, err := transport.NewRegistry(transport.Entry{Name: "mem", Dialer: &mem})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Names(); !reflect.DeepEqual(got, []string{"mem"}) {
		t.Fatalf("Names = %v, want [mem]", got)
	}
	c, err := r.Dial(context.Background(), link.Endpoint{Transport: "mem", Addr: "relay:1"})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(c)
	if string(b) != "hi" {
		t.Fatalf("read %q, want %q", b, "hi")
	}
	if _, err := r.Dial(context.Background(), link.Endpoint{Transport: "obfs", Addr: "x:1"}); !errors.Is(err, transport.ErrUnknown) {
		t.Fatalf("Dial of unregistered transport: got %v, want ErrUnknown", err)
	}
	if _, err := transport.NewRegistry(transport.Entry{Name: "a", Dialer: &mem}, transport.Entry{Name: "a", Dialer: &mem}); err == nil {
		t.Fatal("NewRegistry with a duplicate name succeeded")
	}
	if err := r.Register("", &mem); err == nil {
		t.Fatal("Register with an empty name succeeded")
	}
}

func TestNilRegistry(t *testing.T) {
	t.Parallel()
	var r *transport.Registry
	if _, ok := r.Lookup("tcp"); ok {
		t.Fatal("nil registry found a transport")
	}
}
