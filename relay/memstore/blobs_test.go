package memstore_test

import (
	"testing"

	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/relay/blobtest"
	"github.com/ferry-im/ferry/relay/memstore"
)

func TestBlobConformance(t *testing.T) {
	blobtest.Run(t, blobtest.Config{Open: func(*testing.T) relay.BlobStore { return memstore.NewBlobs() }})
}
