package localstore

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestTransfers: a transfer round-trips, its keys and paths are sealed at
// rest, and it is listed by state and direction.
func TestTransfers(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := create(t, dir, nil)
	defer s.Close()
	secretKey := bytes.Repeat([]byte{0x5e}, 32)
	up := &Transfer{ID: [16]byte{1}, Outgoing: true, State: TransferPending, Size: 1000, Key: [32]byte(secretKey),
		Source: "blobs/01", Path: filepath.Join(dir, "holiday-secret.jpg"),
		Targets: []Target{{Relay: "ferry://relay", Mailbox: [16]byte{2}, Token: [32]byte{3}}}}
	down := &Transfer{ID: [16]byte{4}, State: TransferPending, Size: 10, Pointer: []byte{1, 2, 3}}
	err := s.Update(ctx, func(tx *Tx) error {
		if err := tx.PutTransfer(up); err != nil {
			return err
		}
		return tx.PutTransfer(down)
	})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Update(ctx, func(tx *Tx) error {
		got, err := tx.Transfer([16]byte{1})
		if err != nil || got.Key != up.Key || got.Path != up.Path || len(got.Targets) != 1 || got.Targets[0] != up.Targets[0] || got.State != TransferPending {
			t.Errorf("Transfer: got %+v, %v", got, err)
		}
		if ups, err := tx.Transfers(TransferPending, true); err != nil || len(ups) != 1 || ups[0].ID != up.ID {
			t.Errorf("pending uploads: %v, %v", ups, err)
		}
		if downs, err := tx.Transfers(TransferPending, false); err != nil || len(downs) != 1 || downs[0].ID != down.ID {
			t.Errorf("pending downloads: %v, %v", downs, err)
		}
		if _, err := tx.Transfer([16]byte{9}); !errors.Is(err, ErrNotFound) {
			t.Errorf("missing transfer: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	for _, f := range []string{DBFile, DBFile + "-wal"} {
		b, _ := os.ReadFile(filepath.Join(dir, f))
		if bytes.Contains(b, secretKey) || bytes.Contains(b, []byte("holiday-secret")) {
			t.Errorf("%s holds a transfer's key or path in the clear", f)
		}
	}
}
