package servicetest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Postgres is a PostgreSQL server of the test's own, in a temporary
// directory, which the test may crash and start again (the shared one
// must not be). Its URL names the postgres database.
type Postgres struct {
	URL  string
	t    testing.TB
	bin  string
	dir  string
	port int
	cred *syscall.Credential // run as the postgres user when root
	cmd  *exec.Cmd
	done chan struct{}
}

// StartPostgres initialises and starts a private PostgreSQL server for the
// test, stopped when the test ends. The test fails if PostgreSQL's server
// programs (initdb, postgres) are not installed; .ci/run installs them.
func StartPostgres(t testing.TB) *Postgres {
	t.Helper()
	bin := postgresBin(t)
	p := &Postgres{t: t, bin: bin, port: FreePort(t)}
	dir, err := os.MkdirTemp("", "ferry-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p.dir = filepath.Join(dir, "data")
	if os.Geteuid() == 0 {
		// PostgreSQL refuses to run as root.
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root, and no postgres user to run PostgreSQL as: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		p.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", p.dir, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	p.URL = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres", p.port)
	p.Start()
	t.Cleanup(p.Crash)
	return p
}

// postgresBin finds the directory of PostgreSQL's server programs.
func postgresBin(t testing.TB) string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Strings(dirs)
	for i := len(dirs) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(dirs[i], "initdb")); err == nil {
			return dirs[i]
		}
	}
	if path, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(path)
	}
	t.Fatal("PostgreSQL's server programs (initdb, postgres) are not installed: apt-get install postgresql (see .ci/run)")
	return ""
}

// Start starts the server (again) and waits until it accepts connections.
func (p *Postgres) Start() {
	p.t.Helper()
	p.cmd = exec.Command(filepath.Join(p.bin, "postgres"), "-D", p.dir, "-p", strconv.Itoa(p.port), "-k", p.dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "max_connections=60", "-c", "fsync=on")
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred, Setpgid: true, Pdeathsig: syscall.SIGQUIT}
	p.done = start(p.t, p.cmd)
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := pgx.Connect(ctx, p.URL)
		cancel()
		if err == nil {
			c.Close(context.Background())
			return
		}
		if time.Now().After(end) {
			p.t.Fatalf("postgres did not accept connections within 30s: %v", err)
		}
	}
}

// Crash stops the server the way a crash would: every process of it quits
// at once (SIGQUIT to the postmaster, "immediate" shutdown), without a
// checkpoint, so the next Start recovers from the write-ahead log.
func (p *Postgres) Crash() {
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
	p.cmd = nil
}

// NATS is a NATS server of the test's own, which the test may stop and
// start again.
type NATS struct {
	URL  string
	t    testing.TB
	port int
	cmd  *exec.Cmd
	done chan struct{}
}

// StartNATS starts a private NATS server for the test, stopped when the
// test ends. The test fails if nats-server is not installed; .ci/run
// installs it.
func StartNATS(t testing.TB) *NATS {
	t.Helper()
	n := &NATS{t: t, port: FreePort(t)}
	n.URL = fmt.Sprintf("nats://127.0.0.1:%d", n.port)
	n.Start()
	t.Cleanup(n.Stop)
	return n
}

// Start starts the server (again, on the same port) and waits until it
// accepts connections.
func (n *NATS) Start() {
	n.t.Helper()
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/nats-server"); serr != nil {
			n.t.Fatal("nats-server is not installed: apt-get install nats-server (see .ci/run)")
		}
		bin = "/usr/sbin/nats-server"
	}
	n.cmd = exec.Command(bin, "-a", "127.0.0.1", "-p", strconv.Itoa(n.port))
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // dies with the test binary
	n.done = start(n.t, n.cmd)
	waitTCP(n.t, fmt.Sprintf("127.0.0.1:%d", n.port), 10*time.Second)
}

// Stop kills the server (SIGKILL).
func (n *NATS) Stop() {
	if n.cmd == nil {
		return
	}
	n.cmd.Process.Kill()
	<-n.done
	n.cmd = nil
}

// start starts cmd and returns a channel closed once it has exited.
func start(t testing.TB, cmd *exec.Cmd) chan struct{} {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", filepath.Base(cmd.Path), err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	return done
}
