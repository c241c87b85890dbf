package main

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/acme/autocert"

	"github.com/ferry-im/ferry/transport"
	"github.com/ferry-im/ferry/transport/https"
)

// Files of the https transport in the data directory.
const (
	httpsSecretFile = "https.secret" // base64url secret, one line, mode 0600
	httpsCertFile   = "https.crt"    // the self-signed certificate, PEM
	httpsKeyFile    = "https.key"    // its private key, PEM, mode 0600
	acmeDir         = "acme"         // autocert's cache
)

// httpsFlags are the flags of the https transport.
type httpsFlags struct {
	site, upstream    string
	cert, key         string
	acmeDomain, email string
	sni               string
	behindProxy       bool
}

func httpsTransport() serverTransport {
	f := new(httpsFlags)
	return serverTransport{name: https.Name, flags: f.register, new: f.server}
}

func (f *httpsFlags) register(fl *flag.FlagSet) {
	fl.StringVar(&f.site, "https-site", "", "https: serve the static files in `DIR` as the website (default: a built-in plain site)")
	fl.StringVar(&f.upstream, "https-upstream", "", "https: reverse-proxy the website at `URL` as the relay's own")
	fl.StringVar(&f.cert, "tls-cert", "", "https: certificate chain `FILE` (PEM); behind a proxy, the proxy's certificate, to pin it if it is self-signed")
	fl.StringVar(&f.key, "tls-key", "", "https: private key `FILE` (PEM) of --tls-cert")
	fl.StringVar(&f.acmeDomain, "acme-domain", "", "https: get a certificate for `NAME` by ACME (Let's Encrypt, TLS-ALPN-01: the https listener must be NAME:443)")
	fl.StringVar(&f.email, "acme-email", "", "https: contact `ADDRESS` for the ACME account")
	fl.StringVar(&f.sni, "https-sni", "", "https: server `NAME` in the link (default: --acme-domain, or the host of the link's address)")
	fl.BoolVar(&f.behindProxy, "https-behind-proxy", false, "https: speak cleartext HTTP/1.1 and h2c to a TLS-terminating reverse proxy on this machine (nginx, Caddy); see docs/transports.md")
}

// server builds the relay half from the flags and the data directory.
func (f *httpsFlags) server(env serverEnv) (transport.Server, error) {
	if f.site != "" && f.upstream != "" {
		return nil, errors.New("give --https-site or --https-upstream, not both")
	}
	if f.acmeDomain != "" && (f.cert != "" || f.behindProxy) {
		return nil, errors.New("--acme-domain gets the certificate itself: drop --tls-cert and --https-behind-proxy")
	}
	secret, err := loadOrCreateHTTPSSecret(env.dataDir)
	if err != nil {
		return nil, err
	}
	cfg := https.ServerConfig{Secret: secret, SNI: f.sni, Cleartext: f.behindProxy, Logger: env.log}
	if cfg.Site, err = f.website(); err != nil {
		return nil, err
	}
	if err := f.certificate(env, &cfg); err != nil {
		return nil, err
	}
	srv, err := https.NewServer(cfg)
	if err != nil {
		return nil, err
	}
	env.log.Info("https transport", "path", srv.Path(), "behind_proxy", f.behindProxy, "pinned", cfg.Pin != nil)
	return srv, nil
}

func (f *httpsFlags) website() (http.Handler, error) {
	switch {
	case f.site != "":
		if fi, err := os.Stat(f.site); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("--https-site %s is not a directory", f.site)
		}
		return https.StaticSite(f.site), nil
	case f.upstream != "":
		u, err := url.Parse(f.upstream)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("--https-upstream %q: want a URL like https://www.example.org", f.upstream)
		}
		return https.UpstreamSite(u), nil
	}
	return nil, nil // the built-in site
}

// certificate sets cfg's TLS config, SNI and pin from the flags: ACME, the
// given files, or a self-signed certificate kept in the data directory.
func (f *httpsFlags) certificate(env serverEnv, cfg *https.ServerConfig) error {
	switch {
	case f.acmeDomain != "":
		m := &autocert.Manager{
			Prompt:     autocert.AcceptTOS,
			Cache:      autocert.DirCache(filepath.Join(env.dataDir, acmeDir)),
			HostPolicy: autocert.HostWhitelist(f.acmeDomain),
			Email:      f.email,
		}
		cfg.TLS = m.TLSConfig()
		if cfg.SNI == "" {
			cfg.SNI = f.acmeDomain
		}
		return nil
	case f.behindProxy:
		if f.cert == "" {
			return nil // the proxy's certificate is publicly trusted
		}
		chain, err := readChain(f.cert)
		if err != nil {
			return err
		}
		return pinIfNeeded(cfg, chain)
	case f.cert != "" || f.key != "":
		if f.cert == "" || f.key == "" {
			return errors.New("give both --tls-cert and --tls-key")
		}
		pair, err := tls.LoadX509KeyPair(f.cert, f.key)
		if err != nil {
			return fmt.Errorf("load --tls-cert and --tls-key: %w", err)
		}
		cfg.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
		return pinIfNeeded(cfg, pair.Certificate)
	}
	pair, err := loadOrCreateSelfSigned(env.dataDir, f.sni)
	if err != nil {
		return err
	}
	cfg.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return fmt.Errorf("read https certificate: %w", err)
	}
	cfg.Pin = https.Pin(leaf)
	return nil
}

// pinIfNeeded pins chain in the link unless it verifies for the link's
// server name against the system roots. Without --https-sni the name is
// the certificate's first DNS name.
func pinIfNeeded(cfg *https.ServerConfig, chain [][]byte) error {
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return fmt.Errorf("read --tls-cert: %w", err)
	}
	if cfg.SNI == "" && len(leaf.DNSNames) > 0 {
		cfg.SNI = leaf.DNSNames[0]
	}
	need, err := https.NeedsPin(chain, cfg.SNI, nil, time.Now())
	if err != nil {
		return fmt.Errorf("read --tls-cert: %w", err)
	}
	if need {
		cfg.Pin = https.Pin(leaf)
	}
	return nil
}

// readChain reads the DER certificates of a PEM file.
func readChain(path string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read --tls-cert: %w", err)
	}
	var chain [][]byte
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type == "CERTIFICATE" {
			chain = append(chain, block.Bytes)
		}
	}
	if len(chain) == 0 {
		return nil, fmt.Errorf("--tls-cert %s holds no PEM certificate", path)
	}
	return chain, nil
}

// loadOrCreateHTTPSSecret reads the https secret from dir, creating it on
// first use.
func loadOrCreateHTTPSSecret(dir string) (https.Secret, error) {
	path := filepath.Join(dir, httpsSecretFile)
	b, err := os.ReadFile(path)
	if err == nil {
		s, err := https.ParseSecret(strings.TrimSpace(string(b)))
		if err != nil {
			return s, fmt.Errorf("https secret %s is damaged", path)
		}
		return s, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return https.Secret{}, fmt.Errorf("read https secret: %w", err)
	}
	var s https.Secret
	rand.Read(s[:])
	if err := createPrivateFile(path, []byte(s.String()+"\n")); err != nil {
		return https.Secret{}, fmt.Errorf("write https secret: %w", err)
	}
	return s, nil
}

// loadOrCreateSelfSigned reads the self-signed certificate in dir,
// making it on first use for name (or "localhost").
func loadOrCreateSelfSigned(dir, name string) (tls.Certificate, error) {
	certPath, keyPath := filepath.Join(dir, httpsCertFile), filepath.Join(dir, httpsKeyFile)
	pair, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err == nil {
		return pair, nil
	}
	if _, serr := os.Stat(certPath); !errors.Is(serr, fs.ErrNotExist) {
		return tls.Certificate{}, fmt.Errorf("read the https certificate in %s: %w", dir, err)
	}
	if name == "" {
		name = "localhost"
	}
	certPEM, keyPEM, err := https.SelfSignedCert(name, rand.Reader, time.Now())
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := createPrivateFile(keyPath, keyPEM); err != nil {
		return tls.Certificate{}, fmt.Errorf("write https certificate key: %w", err)
	}
	if err := createPrivateFile(certPath, certPEM); err != nil {
		return tls.Certificate{}, fmt.Errorf("write https certificate: %w", err)
	}
	return tls.X509KeyPair(certPEM, keyPEM)
}
