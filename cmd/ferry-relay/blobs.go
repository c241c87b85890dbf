package main

import (
	"context"
	"flag"
	"fmt"
	"path/filepath"

	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/relay/blobfs"
	"github.com/ferry-im/ferry/relay/postgres"
)

// blobFlags are the blob store's flags.
type blobFlags struct {
	dir string
}

func addBlobFlags(fl *flag.FlagSet) *blobFlags {
	b := &blobFlags{}
	fl.StringVar(&b.dir, "blobs", "", "`DIR` holding attachments, or postgres://... (default: DATA/blobs, or the --store's PostgreSQL for a cluster; \"off\" stores none)")
	return b
}

// open opens the blob store, or returns nil when attachments are off. A
// cluster (a postgres --store) keeps them in its database by default,
// which every relay of it reaches.
func (b *blobFlags) open(ctx context.Context, data, store string) (relay.BlobStore, error) {
	switch {
	case b.dir == "off":
		return nil, nil
	case b.dir == "" && isPostgres(store):
		b.dir = store
	case b.dir == "":
		b.dir = filepath.Join(data, "blobs")
	}
	if isPostgres(b.dir) {
		s, err := postgres.OpenBlobs(ctx, b.dir)
		if err != nil {
			return nil, fmt.Errorf("open the attachment store (--blobs): %w", err)
		}
		return s, nil
	}
	s, err := blobfs.Open(b.dir)
	if err != nil {
		return nil, fmt.Errorf("open the attachment store (--blobs): %w", err)
	}
	return s, nil
}
