package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/relay/sqlite"
)

// dbPolicy says how to open the SQLite database of a data directory.
type dbPolicy struct {
	// ranBefore: the directory held a relay key before this start, so
	// its database must exist (a new database is never made silently in
	// place of a lost one).
	ranBefore bool
	// newDatabase: start with an empty database anyway, keeping the old
	// file (if any) aside.
	newDatabase bool
	warn        func(msg string, args ...any)
}

// hasKey reports whether dir holds a relay key.
func hasKey(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, keyFile))
	return err == nil
}

// open opens the SQLite database at path of data directory dir. A
// missing, empty or damaged database is refused with a message that says
// what to do.
func (p dbPolicy) open(ctx context.Context, dir, path string) (*sqlite.Store, error) {
	if p.newDatabase {
		kept, err := keepAside(path, "replaced")
		if err != nil {
			return nil, err
		}
		if kept != "" {
			p.warn("starting with an empty database as asked; the old one is kept", "kept", kept)
		}
	}
	store, err := sqlite.Open(ctx, path, &sqlite.Options{MustExist: p.ranBefore && !p.newDatabase})
	if err != nil {
		return nil, databaseError(dir, path, err)
	}
	return store, nil
}

// databaseError turns Open's error into what the operator should do.
func databaseError(dir, path string, err error) error {
	again := fmt.Sprintf("ferry-relay --data %s --new-database", dir)
	switch {
	case errors.Is(err, sqlite.ErrMissing):
		return fmt.Errorf("relay database %s is missing, but %s holds this relay's key, so it ran here before: restore relay.db from your backup, or run %q to start with an empty one (the messages waiting on the relay are then lost)", path, dir, again)
	case errors.Is(err, sqlite.ErrEmpty):
		return fmt.Errorf("relay database %s is empty (0 bytes): restore it from your backup, or run %q to start with an empty one (the messages waiting on the relay are then lost)", path, again)
	case errors.Is(err, sqlite.ErrDamaged):
		_, detail, _ := strings.Cut(err.Error(), sqlite.ErrDamaged.Error()+": ")
		return fmt.Errorf("relay database %s is damaged (%s): stop the relay, copy %s somewhere safe, then run \"ferry-relay recover --data %s\" to rebuild it from what can still be read (see docs/operations.md, \"After damage\")", path, detail, dir, dir)
	}
	return err
}

// keepAside renames path (and its -wal and -shm files) to
// path.WHY-TIME and returns the new name, or "" if path does not exist.
func keepAside(path, why string) (string, error) {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	kept := fmt.Sprintf("%s.%s-%s", path, why, time.Now().UTC().Format("20060102-150405"))
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if err := os.Rename(path+suffix, kept+suffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("keep %s aside: %w", path, err)
		}
	}
	return kept, nil
}

// runRecover is "ferry-relay recover": it rebuilds a damaged database
// from what can still be read of it.
func runRecover(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("ferry-relay recover", flag.ContinueOnError)
	fl.SetOutput(stderr)
	data := fl.String("data", defaultData, "`DIR` holding the relay's key and database")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if fl.NArg() > 0 {
		return fmt.Errorf("recover: unexpected argument %q", fl.Arg(0))
	}
	unlock, err := lockData(*data)
	if errors.Is(err, errLocked) {
		return fmt.Errorf("a ferry-relay is running with --data %s: stop it before recovering its database", *data)
	}
	if err != nil {
		return fmt.Errorf("lock data directory: %w", err)
	}
	defer unlock()
	path := filepath.Join(*data, dbFile)
	store, err := sqlite.Open(ctx, path, &sqlite.Options{MustExist: true})
	switch {
	case err == nil:
		store.Close()
		fmt.Fprintf(stdout, "relay database %s passed its integrity check: nothing to recover\n", path)
		return nil
	case errors.Is(err, sqlite.ErrMissing), errors.Is(err, sqlite.ErrEmpty):
		return databaseError(*data, path, err)
	case !errors.Is(err, sqlite.ErrDamaged):
		return err
	}
	rep, err := sqlite.Recover(ctx, path, time.Now())
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "recovered %s: %d mailboxes, %d waiting envelopes, %d acknowledged message ids, %d delivery tokens, %d one-time prekeys; the damaged database is kept as %s\n",
		path, rep.Mailboxes, rep.Envelopes, rep.Acknowledged, rep.Tokens, rep.Prekeys, rep.Kept)
	if len(rep.Incomplete) > 0 {
		fmt.Fprintf(stdout, "rows of %s were on damaged pages and are lost; clients upload their prekeys again and senders resend what was not acknowledged to them\n", strings.Join(rep.Incomplete, ", "))
	}
	if rep.Reregister > 0 {
		fmt.Fprintf(stdout, "%d mailboxes may have lost delivery tokens; their owners' clients register them again when they next connect (within 5 minutes for those online), and until then messages to them are refused\n", rep.Reregister)
	}
	return nil
}

// budgetFlags adds the flags that set the relay's budgets to fl and
// returns a function that reads them once fl is parsed.
func budgetFlags(fl *flag.FlagSet) func() relay.Budgets {
	memory := fl.Int64("memory-mib", 1024, "the relay's memory budget in `MiB`; also the Go runtime's soft memory limit unless GOMEMLIMIT is set")
	conns := fl.Int("max-conns", 0, "connections served at once (`N`; 0: from the memory budget and the open-file limit)")
	disk := fl.Int64("disk-mib", 0, "refuse new messages once the database uses `MiB` (0: no bound of its own; with --store postgres://, the only disk bound)")
	diskFree := fl.Int64("disk-free-mib", 1024, "refuse new messages while the database's file system has less than `MiB` free")
	diskReserve := fl.Int64("disk-reserve-mib", 64, "keep the last `MiB` of disk for messages to mailboxes that hold under 1 MiB (users who read their mail)")
	return func() relay.Budgets {
		b := relay.Budgets{Memory: *memory << 20, Conns: *conns, Disk: *disk << 20, DiskFree: *diskFree << 20, DiskReserve: *diskReserve << 20}
		if os.Getenv("GOMEMLIMIT") == "" && b.Memory > 0 {
			debug.SetMemoryLimit(b.Memory)
		}
		return b
	}
}
