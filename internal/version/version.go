// Package version says which Ferry a binary is: the module version and
// the commit it was built from (from the build information Go records),
// and the wire protocol version it speaks. It is what --version prints.
package version

import (
	"fmt"
	"runtime/debug"

	"github.com/ferry-im/ferry/wire"
)

// String returns one line naming program's version, for example
// "ferry (devel) 1f2e3d4c5b6a+ (protocol 1)".
func String(program string) string {
	v, rev := "(unknown)", ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		v = bi.Main.Version
		dirty := false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value[:min(len(s.Value), 12)]
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if rev != "" && dirty {
			rev += "+"
		}
	}
	if rev != "" {
		rev = " " + rev
	}
	return fmt.Sprintf("%s %s%s (protocol %d)", program, v, rev, wire.ProtocolVersion)
}
