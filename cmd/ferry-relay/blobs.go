package main

import (
	"flag"
	"fmt"
	"path/filepath"

	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/relay/blobfs"
)

// blobFlags are the blob store's flags.
type blobFlags struct {
	dir string
}

func addBlobFlags(fl *flag.FlagSet) *blobFlags {
	b := &blobFlags{}
	fl.StringVar(&b.dir, "blobs", "", "`DIR` holding attachments (default DATA/blobs; \"off\" stores none)")
	return b
}

// open opens the blob store, or returns nil when attachments are off.
func (b *blobFlags) open(data string) (relay.BlobStore, error) {
	switch b.dir {
	case "off":
		return nil, nil
	case "":
		b.dir = filepath.Join(data, "blobs")
	}
	s, err := blobfs.Open(b.dir)
	if err != nil {
		return nil, fmt.Errorf("open the attachment store (--blobs): %w", err)
	}
	return s, nil
}
