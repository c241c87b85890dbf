package localstore

import (
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
)

// TransferState is where an attachment's transfer is.
type TransferState int

// Transfer states.
const (
	// TransferPending: to upload (outgoing) or download (incoming).
	TransferPending TransferState = 1
	// TransferDone: uploaded to every target, or downloaded, checked and
	// decrypted to Path.
	TransferDone TransferState = 2
	// TransferFailed: it will not succeed (Err says why).
	TransferFailed TransferState = 3
)

// Transfer is one attachment's upload or download, keyed by the id of the
// message that carries it. State, sizes and progress are in the clear;
// keys, paths and targets are sealed.
type Transfer struct {
	ID       [16]byte
	Outgoing bool
	State    TransferState
	Size     int64 // the blob's size (ciphertext)
	Done     int64 // bytes transferred when last recorded

	// Key is the blob's write key (outgoing only).
	Key [32]byte `json:"key"`
	// Blob is the relay's id of the blob.
	Blob [16]byte `json:"blob"`
	// Pointer is the attachment pointer (key, digest, plaintext size).
	Pointer []byte `json:"pointer"`
	// Source is the encrypted blob in the profile directory, relative to
	// it: what an upload sends, or what a download has received so far.
	Source string `json:"source"`
	// Targets are the relays and mailboxes to upload to (outgoing).
	Targets []Target `json:"targets,omitempty"`
	// Path is the file: the one sent, or where the download was saved.
	Path string `json:"path,omitempty"`
	// Name and SHA256 are the file's name and the SHA-256 of its content
	// (incoming: what the sender announced).
	Name   string   `json:"name,omitempty"`
	SHA256 [32]byte `json:"sha256"`
	// Err says why the transfer failed.
	Err string `json:"err,omitempty"`
	// Received is when an incoming attachment's message arrived (Unix
	// ms): until its sender's upload could have been given up on, a blob
	// the relay lacks is taken as not uploaded yet.
	Received int64 `json:"received,omitempty"`
}

// Target is one relay an outgoing blob goes to, with the mailbox whose
// quota it is charged to.
type Target struct {
	Relay   string   `json:"relay"`
	Mailbox [16]byte `json:"mailbox"`
	Token   [32]byte `json:"token"`
	Done    bool     `json:"done"`
}

func transferAD(id [16]byte) string { return "transfers|data|" + hex.EncodeToString(id[:]) }

// PutTransfer inserts or replaces tr.
func (t *Tx) PutTransfer(tr *Transfer) error {
	sealed, err := t.sealJSON(transferAD(tr.ID), tr)
	if err != nil {
		return err
	}
	if _, err := t.tx.ExecContext(t.ctx, `INSERT OR REPLACE INTO transfers (id, outgoing, state, size, done, data) VALUES (?, ?, ?, ?, ?, ?)`,
		tr.ID[:], tr.Outgoing, int(tr.State), tr.Size, tr.Done, sealed); err != nil {
		return fmt.Errorf("write transfer: %w", err)
	}
	t.erased = true // the write key of a finished upload
	return nil
}

// Transfer returns the transfer of message id, or ErrNotFound.
func (t *Tx) Transfer(id [16]byte) (*Transfer, error) {
	trs, err := t.queryTransfers(`WHERE id = ?`, id[:])
	if err != nil {
		return nil, err
	}
	if len(trs) == 0 {
		return nil, ErrNotFound
	}
	return trs[0], nil
}

// Transfers returns the transfers in state s of the given direction, in
// the order they were made.
func (t *Tx) Transfers(s TransferState, outgoing bool) ([]*Transfer, error) {
	return t.queryTransfers(`WHERE state = ? AND outgoing = ? ORDER BY rowid`, int(s), outgoing)
}

func (t *Tx) queryTransfers(where string, args ...any) ([]*Transfer, error) {
	rows, err := t.query(`SELECT id, outgoing, state, size, done, data FROM transfers `+where, args...)
	if err != nil {
		return nil, fmt.Errorf("read transfers: %w", err)
	}
	defer rows.Close()
	var out []*Transfer
	for rows.Next() {
		var id, data []byte
		tr := &Transfer{}
		var state int
		if err := rows.Scan(&id, &tr.Outgoing, &state, &tr.Size, &tr.Done, &data); err != nil {
			return nil, err
		}
		if len(id) != 16 {
			return nil, ErrCorrupt
		}
		if err := t.openJSON(transferAD([16]byte(id)), data, tr); err != nil {
			return nil, err
		}
		tr.ID, tr.State = [16]byte(id), TransferState(state)
		out = append(out, tr)
	}
	return out, rows.Err()
}

// DeleteTransfer deletes the transfer of message id, if any.
func (t *Tx) DeleteTransfer(id [16]byte) error {
	_, err := t.tx.ExecContext(t.ctx, `DELETE FROM transfers WHERE id = ?`, id[:])
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("delete transfer: %w", err)
	}
	return nil
}
