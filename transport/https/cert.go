package https

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"time"
)

// SelfSignedValidity is how long a SelfSignedCert is valid.
const SelfSignedValidity = 10 * 365 * 24 * time.Hour

// SelfSignedCert makes a self-signed ECDSA P-256 server certificate for
// name, valid from a day before now for SelfSignedValidity, and returns it
// and its private key as PEM. Clients reach a relay with such a
// certificate through the pin in its link (Pin). TLS 1.3 encrypts the
// certificate, so a censor on the path does not see it.
func SelfSignedCert(name string, rnd io.Reader, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rnd)
	if err != nil {
		return nil, nil, fmt.Errorf("make certificate key: %w", err)
	}
	serial := make([]byte, 16)
	if _, err := io.ReadFull(rnd, serial); err != nil {
		return nil, nil, fmt.Errorf("make certificate serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: new(big.Int).SetBytes(serial),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    now.Add(-24 * time.Hour),
		NotAfter:     now.Add(SelfSignedValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rnd, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("make certificate: %w", err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encode certificate key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), nil
}

// NeedsPin reports whether clients must pin chain (leaf first, DER) to
// reach name: whether it does not verify for name against roots (the
// system's if nil) at now, as a browser would check it.
func NeedsPin(chain [][]byte, name string, roots *x509.CertPool, now time.Time) (bool, error) {
	if len(chain) == 0 {
		return false, fmt.Errorf("certificate chain is empty")
	}
	certs := make([]*x509.Certificate, len(chain))
	for i, der := range chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return false, fmt.Errorf("parse certificate: %w", err)
		}
		certs[i] = c
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: inter, CurrentTime: now})
	return err != nil, nil
}
