package localstore

import (
	"bytes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/chacha20poly1305"
)

// Key file layout (file KeyFile in the profile directory, mode 0600):
//
//	plain:    version(1)=1 || kind(1)=0 || key(32)
//	argon2id: version(1)=1 || kind(1)=1 || time(4, big endian) || memoryKiB(4) || threads(1)
//	          || salt(16) || nonce(24) || XChaCha20-Poly1305(kek, nonce, key(32), ad=header)
//
// where header is every byte before the nonce and kek = Argon2id(passphrase,
// salt, time, memoryKiB, threads, 32).
const (
	keyFileVersion = 1
	kindPlain      = 0
	kindArgon2id   = 1

	keySize       = 32
	saltSize      = 16
	argonHeader   = 2 + 4 + 4 + 1 + saltSize
	plainFileSize = 2 + keySize
	argonFileSize = argonHeader + chacha20poly1305.NonceSizeX + keySize + chacha20poly1305.Overhead

	// Argon2id parameters for new profiles (RFC 9106 section 4, second
	// recommended option, with two lanes for small machines). They are
	// stored in the key file, so they can change without breaking old
	// profiles.
	argonTime    = 3
	argonMemory  = 64 * 1024
	argonThreads = 2

	// Bounds accepted when reading a key file, so a tampered file cannot
	// make Open allocate without limit.
	maxArgonTime   = 64
	maxArgonMemory = 4 * 1024 * 1024
)

// KeyFile is the name of the file holding the profile key.
const KeyFile = "profile.key"

var (
	// ErrWrongPassphrase means the passphrase does not unlock the profile key.
	ErrWrongPassphrase = errors.New("wrong passphrase")
	// ErrPassphraseRequired means the profile key is protected by a
	// passphrase and none was given.
	ErrPassphraseRequired = errors.New("this profile is protected by a passphrase; set FERRY_PASSPHRASE or use --passphrase-file")
	// ErrNoPassphrase means a passphrase was given for a profile whose key
	// is not protected by one.
	ErrNoPassphrase = errors.New("this profile is not protected by a passphrase; open it without one")
)

// newKeyFile creates a profile key and returns it with its key-file bytes.
func newKeyFile(rand io.Reader, passphrase []byte) (key, file []byte, err error) {
	key = make([]byte, keySize)
	if _, err := io.ReadFull(rand, key); err != nil {
		return nil, nil, fmt.Errorf("generate profile key: %w", err)
	}
	file, err = keyFile(rand, key, passphrase)
	return key, file, err
}

// keyFile returns the key-file bytes of key: plain if passphrase is nil,
// else wrapped under it.
func keyFile(rand io.Reader, key, passphrase []byte) ([]byte, error) {
	if passphrase == nil {
		return append([]byte{keyFileVersion, kindPlain}, key...), nil
	}
	return wrapSecret(rand, passphrase, key)
}

// wrapSecret seals secret under passphrase in the argon2id layout (the
// key file's, with a secret of any length).
func wrapSecret(rand io.Reader, passphrase, secret []byte) ([]byte, error) {
	hdr := make([]byte, argonHeader)
	hdr[0], hdr[1] = keyFileVersion, kindArgon2id
	binary.BigEndian.PutUint32(hdr[2:], argonTime)
	binary.BigEndian.PutUint32(hdr[6:], argonMemory)
	hdr[10] = argonThreads
	if _, err := io.ReadFull(rand, hdr[11:]); err != nil {
		return nil, fmt.Errorf("generate salt: %w", err)
	}
	nonce := make([]byte, chacha20poly1305.NonceSizeX)
	if _, err := io.ReadFull(rand, nonce); err != nil {
		return nil, fmt.Errorf("generate nonce: %w", err)
	}
	kek := argon2.IDKey(passphrase, hdr[11:], argonTime, argonMemory, argonThreads, keySize)
	aead, err := chacha20poly1305.NewX(kek)
	if err != nil {
		return nil, err
	}
	return append(append(hdr, nonce...), aead.Seal(nil, nonce, secret, hdr)...), nil
}

// unwrapKey parses key-file bytes and returns the profile key.
func unwrapKey(file, passphrase []byte) ([]byte, error) {
	if len(file) < 2 || file[0] != keyFileVersion {
		return nil, errors.New("unknown key file format")
	}
	switch file[1] {
	case kindPlain:
		if len(file) != plainFileSize {
			return nil, errors.New("key file has the wrong size")
		}
		if passphrase != nil {
			return nil, ErrNoPassphrase
		}
		return bytes.Clone(file[2:]), nil
	case kindArgon2id:
		if passphrase == nil {
			return nil, ErrPassphraseRequired
		}
		return unwrapSecret(file, passphrase, keySize)
	default:
		return nil, errors.New("unknown key file format")
	}
}

// unwrapSecret opens a secret of n bytes sealed by wrapSecret.
func unwrapSecret(file, passphrase []byte, n int) ([]byte, error) {
	if len(file) != argonHeader+chacha20poly1305.NonceSizeX+n+chacha20poly1305.Overhead ||
		file[0] != keyFileVersion || file[1] != kindArgon2id {
		return nil, errors.New("key file has the wrong size")
	}
	hdr := file[:argonHeader]
	t := binary.BigEndian.Uint32(hdr[2:])
	m := binary.BigEndian.Uint32(hdr[6:])
	p := hdr[10]
	if t == 0 || t > maxArgonTime || m < 8*uint32(p) || m > maxArgonMemory || p == 0 {
		return nil, errors.New("key file has invalid Argon2id parameters")
	}
	kek := argon2.IDKey(passphrase, hdr[11:], t, m, p, keySize)
	aead, err := chacha20poly1305.NewX(kek)
	if err != nil {
		return nil, err
	}
	nonce := file[argonHeader : argonHeader+chacha20poly1305.NonceSizeX]
	secret, err := aead.Open(nil, nonce, file[argonHeader+chacha20poly1305.NonceSizeX:], hdr)
	if err != nil {
		return nil, ErrWrongPassphrase
	}
	return secret, nil
}

// sealer seals and opens column values under the profile key. The
// associated data binds each value to its table, column and row, so values
// cannot be swapped between rows or columns undetected.
type sealer struct {
	aead cipher.AEAD
	rand io.Reader
}

// Sealed value layout: nonce(24) || XChaCha20-Poly1305(key, nonce, value, ad).
func (s *sealer) seal(ad string, value []byte) ([]byte, error) {
	out := make([]byte, chacha20poly1305.NonceSizeX, chacha20poly1305.NonceSizeX+len(value)+chacha20poly1305.Overhead)
	if _, err := io.ReadFull(s.rand, out); err != nil {
		return nil, fmt.Errorf("generate nonce: %w", err)
	}
	return s.aead.Seal(out, out, value, []byte(ad)), nil
}

func (s *sealer) open(ad string, sealed []byte) ([]byte, error) {
	if len(sealed) < chacha20poly1305.NonceSizeX+chacha20poly1305.Overhead {
		return nil, ErrCorrupt
	}
	v, err := s.aead.Open(nil, sealed[:chacha20poly1305.NonceSizeX], sealed[chacha20poly1305.NonceSizeX:], []byte(ad))
	if err != nil {
		return nil, ErrCorrupt
	}
	return v, nil
}
