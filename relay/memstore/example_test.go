package memstore_test

import (
	"context"
	"fmt"

	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/relay/memstore"
)

func ExampleNew() {
	s := memstore.New()
	defer s.Close()
	ctx := context.Background()
	mb := [16]byte{1}
	s.PutPrekeys(ctx, mb, relay.PrekeyUpload{
		Signed:  []byte("signed record"),
		OneTime: []relay.Prekey{{ID: 9, Data: []byte("one-time")}},
	}, 0)
	b, _ := s.PopBundle(ctx, mb)
	fmt.Println(string(b.Signed), b.OneTime.ID, b.HasKEM)
	// Output: signed record 9 false
}
