package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ferry-im/ferry"
	"github.com/ferry-im/ferry/transport/proxy"
)

// proxyFile, in the profile directory, holds the profile's upstream proxy
// URL (one line, mode 0600: it may hold a password). --proxy overrides it.
const proxyFile = "proxy"

// proxyURL returns the proxy to use: --proxy, else the profile's, else
// none. "off" or "none" on the command line means none.
func (e *env) proxyURL(home string) (string, error) {
	if e.proxy != "" {
		if e.proxy == "off" || e.proxy == "none" {
			return "", nil
		}
		return e.proxy, nil
	}
	b, err := os.ReadFile(filepath.Join(home, proxyFile))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("cannot read the profile's proxy setting: %v", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// applyProxy sets cfg.NetDialer from the proxy URL, if any.
func (e *env) applyProxy(cfg *ferry.Config) error {
	u, err := e.proxyURL(cfg.Home)
	if err != nil || u == "" {
		return err
	}
	nd, err := proxy.FromURL(u, nil)
	if err != nil {
		return err
	}
	cfg.NetDialer = nd
	return nil
}

// cmdProxy shows, sets or clears the profile's upstream proxy.
func cmdProxy(e *env, args []string) error {
	pos, err := e.parse(e.flags("proxy"), args, -1)
	if err != nil {
		return err
	}
	cfg, err := e.config()
	if err != nil {
		return err
	}
	path := filepath.Join(cfg.Home, proxyFile)
	switch len(pos) {
	case 0:
		b, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			fmt.Fprintln(e.stdout, "no proxy: Ferry connects directly")
			return nil
		}
		if err != nil {
			return err
		}
		c, err := proxy.ParseURL(strings.TrimSpace(string(b)))
		if err != nil {
			return err
		}
		fmt.Fprintln(e.stdout, c) // without the password
		return nil
	case 1:
	default:
		return usageErr("usage: ferry proxy [URL | off]")
	}
	if v := pos[0]; v == "off" || v == "none" {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		fmt.Fprintln(e.stdout, "no proxy: Ferry connects directly")
		return nil
	}
	c, err := proxy.ParseURL(pos[0])
	if err != nil {
		return err
	}
	if _, err := os.Stat(cfg.Home); err != nil {
		return fmt.Errorf("no profile in %s; run ferry init first", cfg.Home)
	}
	if err := os.WriteFile(path, []byte(pos[0]+"\n"), 0o600); err != nil {
		return fmt.Errorf("cannot save the proxy setting: %v", err)
	}
	fmt.Fprintf(e.stdout, "every transport now goes through %s\n", c)
	return nil
}

// routeText says in plain words which transport the client uses and why
// it changed.
func routeText(r ferry.Route) string {
	s := "connected over " + r.Transport
	if r.Why != "" {
		s += " (" + r.Why + ")"
	}
	return s
}

// cmdStatus connects to the relay and says over which transport, why it
// is not the one used before, and how many messages wait in the outbox.
func cmdStatus(e *env, args []string) error {
	fl := e.flags("status")
	asJSON := fl.Bool("json", false, "print a JSON object")
	if _, err := e.parse(fl, args, 0); err != nil {
		return err
	}
	return e.client(func(c *ferry.Client) error {
		syncErr := c.Sync(e.ctx, ferry.SyncOptions{})
		queued, err := c.Queued(e.ctx)
		if err != nil {
			return err
		}
		r, ok := c.Route()
		if *asJSON {
			out := struct {
				Online    bool   `json:"online"`
				Transport string `json:"transport,omitempty"`
				Addr      string `json:"addr,omitempty"`
				Why       string `json:"why,omitempty"`
				Queued    int    `json:"queued"`
				Error     string `json:"error,omitempty"`
			}{Online: syncErr == nil, Transport: r.Transport, Addr: r.Addr, Why: r.Why, Queued: queued}
			if syncErr != nil {
				out.Error = syncErr.Error()
			}
			return json.NewEncoder(e.stdout).Encode(out)
		}
		switch {
		case syncErr != nil && errors.Is(syncErr, ferry.ErrUnreachable):
			fmt.Fprintf(e.stdout, "offline: %v\n", syncErr)
		case syncErr != nil:
			return syncErr
		case ok:
			fmt.Fprintf(e.stdout, "%s to %s, since %s\n", routeText(r), r.Addr, r.Since.Format(time.Kitchen))
		}
		fmt.Fprintf(e.stdout, "%d message(s) waiting in the outbox\n", queued)
		return nil
	})
}
