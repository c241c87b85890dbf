package probe

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/ferry-im/ferry"
	"github.com/ferry-im/ferry/monitor"
)

func (p *ClientProbe) clientConfig(name string) ferry.Config {
	return ferry.Config{Home: filepath.Join(p.cfg.Dir, name), Rand: p.cfg.Rand, Now: p.cfg.Now, Logger: p.cfg.Logger, Transports: p.reg,
		// A probe account's receipts go at once: the trial times the round trip.
		ImmediateReceipts: true}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// accounts opens the cell's two probe accounts, making them (and
// introducing them to each other through the relay) when there are none
// or the last trial failed. On failure it marks the trial failed.
func (tr *trial) accounts() (a, b *ferry.Client, ok bool) {
	p := tr.p
	dir := p.cfg.Dir
	if exists(filepath.Join(dir, dirtyMarker)) {
		for _, f := range []string{"a", "b", readyMarker, dirtyMarker} {
			if err := os.RemoveAll(filepath.Join(dir, f)); err != nil {
				tr.t.Fail(monitor.StageLocal, fmt.Errorf("reset probe accounts: %w", err))
				return nil, nil, false
			}
		}
	}
	if exists(filepath.Join(dir, readyMarker)) {
		a, err := ferry.Open(tr.ctx, p.clientConfig("a"))
		if err != nil {
			tr.t.Fail(monitor.StageLocal, fmt.Errorf("open probe account: %w", err))
			return nil, nil, false
		}
		b, err := ferry.Open(tr.ctx, p.clientConfig("b"))
		if err != nil {
			a.Close()
			tr.t.Fail(monitor.StageLocal, fmt.Errorf("open probe account: %w", err))
			return nil, nil, false
		}
		return a, b, true
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		tr.t.Fail(monitor.StageLocal, fmt.Errorf("make probe accounts: %w", err))
		return nil, nil, false
	}
	// Any leftover of a setup that did not finish goes first.
	os.RemoveAll(filepath.Join(dir, "a"))
	os.RemoveAll(filepath.Join(dir, "b"))
	if !tr.step("setup", func() (err error) { a, b, err = tr.setup(); return }) {
		return nil, nil, false
	}
	if err := os.WriteFile(filepath.Join(dir, readyMarker), nil, 0o600); err != nil {
		a.Close()
		b.Close()
		tr.t.Fail(monitor.StageLocal, fmt.Errorf("make probe accounts: %w", err))
		return nil, nil, false
	}
	return a, b, true
}

// setup makes the two accounts on the relay and introduces b to a with
// a's invite, as two users would.
func (tr *trial) setup() (a, b *ferry.Client, err error) {
	p := tr.p
	link := p.cfg.Relay.String()
	closeAll := func() {
		for _, c := range []*ferry.Client{a, b} {
			if c != nil {
				c.Close()
			}
		}
	}
	if a, err = ferry.Init(tr.ctx, p.clientConfig("a"), link, nameA); err != nil {
		closeAll()
		return nil, nil, err
	}
	if b, err = ferry.Init(tr.ctx, p.clientConfig("b"), link, nameB); err != nil {
		closeAll()
		return nil, nil, err
	}
	inv, err := a.Invite(tr.ctx)
	if err == nil {
		_, err = b.Accept(tr.ctx, inv)
	}
	if err == nil {
		err = a.Sync(tr.ctx, ferry.SyncOptions{})
	}
	if err == nil {
		var ks []ferry.Contact
		ks, err = a.Contacts(tr.ctx)
		if err == nil && (len(ks) != 1 || ks[0].Name != nameB) {
			err = fmt.Errorf("%w: the introduction of the second probe account did not arrive", ferry.ErrQueued)
		}
	}
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	return a, b, nil
}
