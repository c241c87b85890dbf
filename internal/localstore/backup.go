package localstore

import (
	"bytes"
	"context"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/ferry-im/ferry/internal/atomicfile"
)

// Backup layout (docs/client.md section 1.4):
//
//	backup = magic(8)="FERRYBK1" || wrapped(122) || chunk...
//	wrapped = the argon2id layout of the key file, sealing
//	          stream key(32) || profile key(32) under the backup passphrase
//	chunk   = ChaCha20-Poly1305(stream key, nonce = counter(11, BE) || last(1), plaintext, ad = magic || wrapped)
//
// The plaintext, cut into chunks of backupChunk bytes (the last one
// shorter, flagged last), is a snapshot of the database. The database's
// values stay sealed under the profile key inside it.
const (
	backupMagic   = "FERRYBK1"
	backupChunk   = 64 << 10
	backupWrapped = argonHeader + chacha20poly1305.NonceSizeX + 2*keySize + chacha20poly1305.Overhead
)

// ErrNotBackup means the file given to Restore is not a Ferry backup.
var ErrNotBackup = errors.New("this file is not a Ferry backup")

// Backup writes an encrypted copy of the profile to w, readable with
// passphrase (which must not be empty) by Restore on any machine.
func (s *Store) Backup(ctx context.Context, w io.Writer, passphrase []byte) error {
	if len(passphrase) == 0 {
		return errors.New("a backup needs a passphrase")
	}
	tmp := filepath.Join(s.dir, "backup.tmp")
	os.Remove(tmp)
	if _, err := s.db.ExecContext(ctx, `VACUUM INTO ?`, tmp); err != nil {
		return fmt.Errorf("snapshot database: %w", err)
	}
	defer os.Remove(tmp)
	f, err := os.Open(tmp)
	if err != nil {
		return fmt.Errorf("snapshot database: %w", err)
	}
	defer f.Close()
	keys := make([]byte, 2*keySize)
	if _, err := io.ReadFull(s.seal.rand, keys[:keySize]); err != nil {
		return err
	}
	copy(keys[keySize:], s.key)
	wrapped, err := wrapSecret(s.seal.rand, passphrase, keys)
	if err != nil {
		return err
	}
	hdr := append([]byte(backupMagic), wrapped...)
	if _, err := w.Write(hdr); err != nil {
		return fmt.Errorf("write backup: %w", err)
	}
	aead, err := chacha20poly1305.New(keys[:keySize])
	if err != nil {
		return err
	}
	return sealStream(aead, hdr, f, w)
}

// sealStream encrypts r to w in chunks.
func sealStream(aead cipher.AEAD, ad []byte, r io.Reader, w io.Writer) error {
	buf := make([]byte, backupChunk+1) // one byte more: is there a next chunk?
	n, err := io.ReadFull(r, buf)
	for i := uint64(0); ; i++ {
		last := err == io.EOF || err == io.ErrUnexpectedEOF
		if err != nil && !last {
			return fmt.Errorf("read database: %w", err)
		}
		k := min(n, backupChunk)
		if _, err := w.Write(aead.Seal(nil, streamNonce(i, last), buf[:k], ad)); err != nil {
			return fmt.Errorf("write backup: %w", err)
		}
		if last {
			return nil
		}
		// Keep the byte read past the chunk and read the rest after it.
		buf[0] = buf[backupChunk]
		n, err = io.ReadFull(r, buf[1:])
		n++
	}
}

func streamNonce(i uint64, last bool) []byte {
	nonce := make([]byte, chacha20poly1305.NonceSize)
	binary.BigEndian.PutUint64(nonce[3:11], i)
	if last {
		nonce[11] = 1
	}
	return nonce
}

// Restore makes a profile in dir (which must hold none) from a backup
// read from r, opened with backupPassphrase, and protects the restored
// profile key as opts says.
func Restore(ctx context.Context, dir string, r io.Reader, backupPassphrase []byte, opts Options) (*Store, error) {
	if Exists(dir) {
		return nil, ErrExists
	}
	hdr := make([]byte, len(backupMagic)+backupWrapped)
	if _, err := io.ReadFull(r, hdr); err != nil || !bytes.HasPrefix(hdr, []byte(backupMagic)) {
		return nil, ErrNotBackup
	}
	keys, err := unwrapSecret(hdr[len(backupMagic):], backupPassphrase, 2*keySize)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create profile directory: %w", err)
	}
	if err := restoreDB(r, dir, keys[:keySize], hdr); err != nil {
		return nil, err
	}
	file, err := keyFile(opts.rand(), keys[keySize:], opts.Passphrase)
	if err != nil {
		return nil, err
	}
	if err := atomicfile.Write(filepath.Join(dir, KeyFile), file); err != nil {
		return nil, fmt.Errorf("write key file: %w", err)
	}
	return Open(ctx, dir, opts)
}

// restoreDB decrypts the backup's chunks into the database file of dir.
func restoreDB(r io.Reader, dir string, streamKey, ad []byte) error {
	aead, err := chacha20poly1305.New(streamKey)
	if err != nil {
		return err
	}
	for _, f := range []string{DBFile, DBFile + "-wal", DBFile + "-shm"} {
		os.Remove(filepath.Join(dir, f))
	}
	tmp := filepath.Join(dir, DBFile+".restore")
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("restore database: %w", err)
	}
	defer os.Remove(tmp)
	if err := openStream(aead, ad, r, out); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return fmt.Errorf("restore database: %w", err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("restore database: %w", err)
	}
	return os.Rename(tmp, filepath.Join(dir, DBFile))
}

// openStream decrypts chunks from r to w; the last one must be flagged
// and nothing may follow it.
func openStream(aead cipher.AEAD, ad []byte, r io.Reader, w io.Writer) error {
	buf := make([]byte, backupChunk+aead.Overhead())
	// A failed Open clears its destination, so it must not be buf.
	out := make([]byte, 0, backupChunk)
	for i := uint64(0); ; i++ {
		n, err := io.ReadFull(r, buf)
		if err != nil && err != io.ErrUnexpectedEOF {
			return fmt.Errorf("read backup: %w", ErrCorrupt)
		}
		pt, oerr := aead.Open(out[:0], streamNonce(i, false), buf[:n], ad)
		last := oerr != nil
		if last {
			if pt, oerr = aead.Open(out[:0], streamNonce(i, true), buf[:n], ad); oerr != nil {
				return fmt.Errorf("read backup: %w", ErrCorrupt)
			}
		}
		if _, err := w.Write(pt); err != nil {
			return fmt.Errorf("restore database: %w", err)
		}
		if last {
			if n, _ := r.Read(make([]byte, 1)); n != 0 {
				return fmt.Errorf("read backup: data after the end: %w", ErrCorrupt)
			}
			return nil
		}
	}
}
