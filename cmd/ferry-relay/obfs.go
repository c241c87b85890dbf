package main

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/ferry-im/ferry/transport"
	"github.com/ferry-im/ferry/transport/obfs"
)

// obfsKeyFile holds the relay's obfs key (base64url, one line, mode 0600),
// distinct from the channel key in relay.key. Its public half, with the
// relay's first-packet shape, goes in the link's obfs endpoint.
const obfsKeyFile = "obfs.key"

func obfsTransport() serverTransport {
	return serverTransport{
		name: obfs.Name,
		new: func(env serverEnv) (transport.Server, error) {
			key, err := loadOrCreateObfsKey(env.dataDir)
			if err != nil {
				return nil, err
			}
			return obfs.NewServer(obfs.ServerConfig{Key: key, Logger: env.log})
		},
	}
}

// loadOrCreateObfsKey reads the obfs key from dir, creating it on the
// first start with obfs.
func loadOrCreateObfsKey(dir string) (obfs.PrivateKey, error) {
	path := filepath.Join(dir, obfsKeyFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		key, err := obfs.GenerateKey(rand.Reader)
		if err != nil {
			return obfs.PrivateKey{}, err
		}
		text := base64.RawURLEncoding.EncodeToString(key.Bytes()) + "\n"
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return obfs.PrivateKey{}, fmt.Errorf("create obfs key: %w", err)
		}
		if _, err := f.WriteString(text); err != nil || f.Sync() != nil || f.Close() != nil {
			f.Close()
			os.Remove(path)
			return obfs.PrivateKey{}, fmt.Errorf("write obfs key %s: the disk refused it", path)
		}
		return key, nil
	}
	if err != nil {
		return obfs.PrivateKey{}, fmt.Errorf("read obfs key: %w", err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return obfs.PrivateKey{}, fmt.Errorf("obfs key %s is readable by others (mode %v); run chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(raw) != 32 {
		return obfs.PrivateKey{}, fmt.Errorf("obfs key %s is damaged; move it away to make a new one (old links then stop working over obfs)", path)
	}
	return obfs.NewPrivateKey(raw)
}
