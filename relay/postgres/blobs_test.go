package postgres_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"testing"
	"time"

	"github.com/ferry-im/ferry/internal/servicetest"
	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/relay/blobtest"
	"github.com/ferry-im/ferry/relay/postgres"
)

func TestBlobConformance(t *testing.T) {
	urls := map[relay.BlobStore]string{}
	open := func(t *testing.T, url string) relay.BlobStore {
		s, err := postgres.OpenBlobs(context.Background(), url)
		if err != nil {
			t.Fatalf("OpenBlobs: %v", err)
		}
		urls[s] = url
		return s
	}
	blobtest.Run(t, blobtest.Config{
		Open: func(t *testing.T) relay.BlobStore { return open(t, servicetest.PostgresURL(t)) },
		Reopen: func(t *testing.T, s relay.BlobStore) relay.BlobStore {
			s.Close()
			return open(t, urls[s])
		},
	})
}

// TestBlobsShared: two relays of a cluster share one blob store: an
// upload begun through one is resumed and finished through the other, and
// read through either.
func TestBlobsShared(t *testing.T) {
	url := servicetest.PostgresURL(t)
	ctx := context.Background()
	a, err := postgres.OpenBlobs(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := postgres.OpenBlobs(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	data := blobtest.Data(300000, 4)
	id, mb := [16]byte{1}, [16]byte{2}
	now := time.Now()
	if _, err := a.Create(ctx, id, mb, int64(len(data)), now, relay.BlobQuota{}); err != nil {
		t.Fatal(err)
	}
	blobtest.WriteFrom(t, a, id, data[:100000], 0, 65536)
	info, err := b.Create(ctx, id, mb, int64(len(data)), now, relay.BlobQuota{})
	if err != nil || info.Stored != 100000 {
		t.Fatalf("the other relay sees %+v, %v", info, err)
	}
	info = blobtest.WriteFrom(t, b, id, data, 100000, 65536)
	if !info.Complete || info.Digest != sha256.Sum256(data) {
		t.Fatalf("finished through the other relay: %+v", info)
	}
	got := make([]byte, len(data))
	if n, err := a.ReadAt(ctx, id, got, 0); err != nil || n != len(data) || !bytes.Equal(got, data) {
		t.Fatalf("read through the first relay: %d, %v", n, err)
	}
}
