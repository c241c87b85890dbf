package ferry

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"net"
	"testing"

	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/internal/relayclient"
	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/relay/blobtest"
	"github.com/ferry-im/ferry/relay/memstore"
	"github.com/ferry-im/ferry/transport/fallback/fallbacktest"
)

// TestUploadResumesOverAnotherTransport: an upload cut part way over tcp
// resumes over obfs from where the relay is, without a byte stored
// twice.
func TestUploadResumesOverAnotherTransport(t *testing.T) {
	key, _ := channel.GenerateKeyPair(nil)
	srv, err := relay.NewServer(relay.Config{Key: key, Store: memstore.New(), Blobs: memstore.NewBlobs()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	obfsSrv := fallbacktest.ObfsServer(t, 0)
	tcpL, _ := net.Listen("tcp", "127.0.0.1:0")
	rawObfs, _ := net.Listen("tcp", "127.0.0.1:0")
	obfsL := obfsSrv.Listener(rawObfs)
	defer tcpL.Close()
	defer obfsL.Close()
	for _, l := range []net.Listener{tcpL, obfsL} {
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go srv.ServeConn(context.Background(), c)
			}
		}()
	}
	r := link.Relay{Key: key.Public, Endpoints: []link.Endpoint{{Transport: "tcp", Addr: tcpL.Addr().String()}, obfsSrv.Endpoint(rawObfs.Addr().String())}}
	dial := func(name string) *relayclient.Conn {
		k, _ := channel.GenerateKeyPair(nil)
		cn, err := (&relayclient.Dialer{Transports: DefaultTransports(nil), Order: []string{name}}).Dial(context.Background(), r, k)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cn.Close() })
		return cn
	}
	ctx := context.Background()
	ownerKey, _ := channel.GenerateKeyPair(nil)
	owner, err := (&relayclient.Dialer{Transports: DefaultTransports(nil), Order: []string{"tcp"}}).Dial(ctx, r, ownerKey)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close()
	var tok, bk [32]byte
	rand.Read(tok[:])
	rand.Read(bk[:])
	if err := owner.SetToken(ctx, tok); err != nil {
		t.Fatal(err)
	}
	mb := channel.MailboxID(ownerKey.Public)
	data := blobtest.Data(4<<20, 8)
	up := dial("tcp")
	st, err := up.BlobCreate(ctx, bk, mb, tok, int64(len(data)), false)
	if err != nil {
		t.Fatal(err)
	}
	_, err = up.Upload(ctx, bk, bytes.NewReader(data), int64(len(data)), st, func(stored int64) {
		if stored > 1<<20 {
			up.Close() // the path over tcp is cut
		}
	})
	if !errors.Is(err, relayclient.ErrUnreachable) {
		t.Fatalf("cut upload: %v", err)
	}
	other := dial("obfs")
	st, err = other.BlobCreate(ctx, bk, mb, tok, int64(len(data)), false)
	if err != nil || st.Stored < 1<<20 {
		t.Fatalf("state over obfs: %+v, %v", st, err)
	}
	st, err = other.Upload(ctx, bk, bytes.NewReader(data), int64(len(data)), st, nil)
	if err != nil || !st.Complete || st.Digest != sha256.Sum256(data) {
		t.Fatalf("resumed over obfs: %+v, %v", st, err)
	}
	if dup := relayMetric(srv, "ferry_relay_blob_put_bytes_total", "duplicate"); dup != 0 {
		t.Errorf("%v bytes stored twice", dup)
	}
}

func relayMetric(srv *relay.Server, name, label string) float64 {
	fams, _ := srv.Registry().Gather()
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetValue() == label {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
