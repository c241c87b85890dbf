package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/monitor/ranking"
)

// rankingKeyFile is the file 'ferry-monitor ranking-key' writes and
// 'ferry-monitor run --ranking-key' reads (mode 0600).
type rankingKeyFile struct {
	// Key is the Ed25519 ranking key's seed; Cert its certificate by the
	// relay key; Publisher the channel key the relay takes rankings from.
	Key       []byte `json:"key"`
	Cert      []byte `json:"cert"`
	Publisher []byte `json:"publisher"`
}

var b64 = base64.RawURLEncoding

func rankingKeyMain(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs, _ := newFlags("ranking-key", "--relay-data DIR --out FILE [--valid D]", stderr)
	relayData := fs.String("relay-data", "", "the relay's data directory (its relay.key signs the certificate; run this on the relay's machine)")
	out := fs.String("out", "ranking.key", "the file to write the ranking key, its certificate and the publisher key to (mode 0600)")
	valid := fs.Duration("valid", 365*24*time.Hour, "how long the certificate holds")
	if code := parse(fs, args); code >= 0 {
		return code
	}
	if *relayData == "" {
		return fail(stderr, "give the relay's data directory with --relay-data")
	}
	raw, err := os.ReadFile(filepath.Join(*relayData, "relay.key"))
	if err != nil {
		return fail(stderr, "the relay's key cannot be read (%v): give its data directory with --relay-data", err)
	}
	priv, err := b64.Strict().DecodeString(strings.TrimSpace(string(raw)))
	if err != nil || len(priv) != 32 {
		return fail(stderr, "%s is not a relay key: give the relay's data directory with --relay-data", filepath.Join(*relayData, "relay.key"))
	}
	f, pub, err := newRankingKey([32]byte(priv), time.Now().Add(*valid))
	if err != nil {
		return fail(stderr, "%v", err)
	}
	b, _ := json.Marshal(f)
	file, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fail(stderr, "the key file cannot be written (%v): choose another --out", err)
	}
	if _, err := file.Write(b); err != nil {
		file.Close()
		return fail(stderr, "the key file cannot be written (%v): choose another --out", err)
	}
	if err := file.Close(); err != nil {
		return fail(stderr, "the key file cannot be written (%v): choose another --out", err)
	}
	fmt.Fprintf(stdout, "wrote %s; start the relay with: --ranking-publisher %s\n", *out, b64.EncodeToString(pub[:]))
	return exitOK
}

// newRankingKey makes a ranking key and a publisher key, and certifies the
// ranking key with the relay's private key until expires.
func newRankingKey(relayPriv [32]byte, expires time.Time) (*rankingKeyFile, [32]byte, error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, [32]byte{}, err
	}
	cert, err := ranking.NewCert(relayPriv, key.Public().(ed25519.PublicKey), expires, rand.Reader)
	if err != nil {
		return nil, [32]byte{}, err
	}
	publisher, err := channel.GenerateKeyPair(rand.Reader)
	if err != nil {
		return nil, [32]byte{}, err
	}
	cb, _ := cert.MarshalBinary()
	return &rankingKeyFile{Key: key.Seed(), Cert: cb, Publisher: publisher.Private[:]}, publisher.Public, nil
}

// loadRankingKey reads a file rankingKeyMain wrote.
func loadRankingKey(path string) (ed25519.PrivateKey, ranking.Cert, channel.KeyPair, error) {
	var f rankingKeyFile
	var cert ranking.Cert
	b, err := os.ReadFile(path)
	if err == nil {
		err = json.Unmarshal(b, &f)
	}
	if err == nil && (len(f.Key) != ed25519.SeedSize || len(f.Publisher) != 32) {
		err = errors.New("wrong key sizes")
	}
	if err == nil {
		err = cert.UnmarshalBinary(f.Cert)
	}
	if err != nil {
		return nil, cert, channel.KeyPair{}, fmt.Errorf("the ranking key %s cannot be read (%v): make it with 'ferry-monitor ranking-key'", path, err)
	}
	pub, err := channel.NewKeyPair([32]byte(f.Publisher))
	if err != nil {
		return nil, cert, channel.KeyPair{}, err
	}
	return ed25519.NewKeyFromSeed(f.Key), cert, pub, nil
}
