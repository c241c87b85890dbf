package ferry

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/ferry-im/ferry/internal/relayclient"
	"github.com/ferry-im/ferry/transport/fallback"
)

// Route is the transport the client last reached its relay over, since
// when, and why it left the one before (empty for the first).
type Route = relayclient.Route

// memoryFile, in Home, keeps what worked on which network (the fallback
// dialer's memory, docs/transports.md section 7). It holds no secret but
// shows which networks the user was on, so it is private to the user.
const memoryFile = "transports.json"

// loadMemory reads the memory in home; a missing or damaged file gives an
// empty memory (it is only a hint).
func loadMemory(home string) *fallback.Memory {
	m := new(fallback.Memory)
	b, err := os.ReadFile(filepath.Join(home, memoryFile))
	if err == nil {
		if json.Unmarshal(b, m) != nil {
			m = new(fallback.Memory)
		}
	}
	return m
}

// saveMemory writes the memory to home.
func saveMemory(home string, m *fallback.Memory) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	tmp := filepath.Join(home, memoryFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil // no profile directory (yet)
		}
		return err
	}
	return os.Rename(tmp, filepath.Join(home, memoryFile))
}

// routeWatch is the client's end of the dialer's route notices: it keeps
// the memory on disk and tells the running Sync, if it asked.
type routeWatch struct {
	home   string
	mem    *fallback.Memory
	relay  [32]byte
	notify atomic.Pointer[func(Route)]
	log    func(msg string, args ...any)
}

func (w *routeWatch) changed(key [32]byte, r Route) {
	if err := saveMemory(w.home, w.mem); err != nil {
		w.log("save transport memory", "err", err.Error())
	}
	if key != w.relay {
		return
	}
	if f := w.notify.Load(); f != nil {
		(*f)(r)
	}
}

// Route returns the transport of the client's latest connection to its
// relay in this process, and why it changed from the one before.
func (c *Client) Route() (Route, bool) {
	return c.a.Dialer.Route(c.a.Relay.Key)
}
