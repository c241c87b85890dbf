package wire_test

import (
	"errors"
	"fmt"

	"github.com/ferry-im/ferry/wire"
)

// A reader decodes each frame into its typed message and skips types it
// does not know.
func ExampleDecode() {
	frames := []wire.Frame{
		{Type: wire.TypePing, Payload: []byte{0, 0, 0, 0, 0, 0, 0, 42}},
		{Type: 0xee, Payload: []byte("a frame from a newer version")},
	}
	for _, f := range frames {
		m, err := wire.Decode(f)
		if errors.Is(err, wire.ErrUnknownType) {
			fmt.Println("skip", f.Type)
			continue
		}
		switch m := m.(type) {
		case wire.Ping:
			reply, _ := wire.NewFrame(wire.Pong(m))
			fmt.Println("ping", m.Nonce, "-> reply", reply.Type)
		}
	}
	// Output:
	// ping 42 -> reply Pong
	// skip Type(0xee)
}
