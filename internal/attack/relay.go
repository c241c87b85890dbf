package attack

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ferry-im/ferry/link"
)

// Relay is a ferry-relay process started for an attack.
type Relay struct {
	// Link is the relay's link.
	Link link.Relay
	// Data is its data directory.
	Data string

	cmd    *exec.Cmd
	stderr *logBuffer
	exited chan error
	peak   atomic.Int64 // highest resident memory seen, bytes
	stop   chan struct{}
	done   chan struct{} // closed when sample returns; nil if it never ran
}

// RelayConfig says how to start a relay.
type RelayConfig struct {
	// Bin is the ferry-relay binary.
	Bin string
	// Data is the data directory (created if missing).
	Data string
	// MemoryMiB is the relay's memory budget (--memory-mib). If zero,
	// the relay's default (1 GiB).
	MemoryMiB int
	// OpenFiles, if not zero, runs the relay with that open-file limit
	// (through prlimit(1)), so that an attack can reach it.
	OpenFiles int
	// Args are more flags.
	Args []string
}

// StartRelay runs a relay listening on 127.0.0.1 and waits for its link.
// Stop it with Stop.
func StartRelay(cfg RelayConfig) (*Relay, error) {
	args := []string{"--data", cfg.Data, "--listen", "tcp=127.0.0.1:0"}
	if cfg.MemoryMiB > 0 {
		args = append(args, "--memory-mib", strconv.Itoa(cfg.MemoryMiB))
	}
	args = append(args, cfg.Args...)
	name := cfg.Bin
	if cfg.OpenFiles > 0 {
		prlimit, err := exec.LookPath("prlimit")
		if err != nil {
			return nil, fmt.Errorf("start relay: an open-file limit needs prlimit(1) (util-linux): %w", err)
		}
		args = append([]string{fmt.Sprintf("--nofile=%d:%d", cfg.OpenFiles, cfg.OpenFiles), "--", cfg.Bin}, args...)
		name = prlimit
	}
	cmd := exec.Command(name, args...)
	// The relay dies with the process that started it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("start relay: %w", err)
	}
	r := &Relay{Data: cfg.Data, cmd: cmd, stderr: &logBuffer{}, exited: make(chan error, 1), stop: make(chan struct{})}
	cmd.Stderr = r.stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start relay: %w", err)
	}
	go func() { r.exited <- cmd.Wait() }()
	line := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(stdout)
		if s.Scan() {
			line <- s.Text()
		}
		close(line)
		io.Copy(io.Discard, stdout)
	}()
	select {
	case l, ok := <-line:
		if r.Link, err = link.ParseRelay(l); !ok || err != nil {
			r.Stop()
			return nil, fmt.Errorf("start relay: no link printed (%v); stderr:\n%s", err, r.stderr)
		}
	case <-time.After(30 * time.Second):
		r.Stop()
		return nil, fmt.Errorf("start relay: no link within 30s; stderr:\n%s", r.stderr)
	}
	r.done = make(chan struct{})
	go r.sample()
	return r, nil
}

// sample records the relay's resident memory every 50 ms until Stop.
func (r *Relay) sample() {
	defer close(r.done)
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		if rss, err := residentMemory(r.cmd.Process.Pid); err == nil && rss > r.peak.Load() {
			r.peak.Store(rss)
		}
		select {
		case <-r.stop:
			return
		case <-t.C:
		}
	}
}

// residentMemory reads VmRSS of process pid from /proc (Linux).
func residentMemory(pid int) (int64, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS in /proc status")
}

// cpuTime is the CPU time (user and system) process pid has used, from
// /proc (Linux; clock ticks of 10 ms).
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, err
	}
	// The fields after the command name, which is in parentheses.
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

// CPU is the CPU time the relay has used.
func (r *Relay) CPU() time.Duration {
	d, _ := cpuTime(r.cmd.Process.Pid)
	return d
}

// PeakRSS is the highest resident memory seen since the last ResetPeak.
func (r *Relay) PeakRSS() int64 { return r.peak.Load() }

// ResetPeak starts a new peak measurement.
func (r *Relay) ResetPeak() {
	if rss, err := residentMemory(r.cmd.Process.Pid); err == nil {
		r.peak.Store(rss)
	}
}

// Alive reports whether the relay still runs.
func (r *Relay) Alive() bool {
	select {
	case err := <-r.exited:
		r.exited <- err
		return false
	default:
		return true
	}
}

// Stderr is what the relay has logged.
func (r *Relay) Stderr() string { return r.stderr.String() }

// Stop stops the relay with SIGTERM (SIGKILL after 20 s) and waits.
func (r *Relay) Stop() error {
	r.cmd.Process.Signal(syscall.SIGTERM)
	var err error
	select {
	case err = <-r.exited:
	case <-time.After(20 * time.Second):
		r.cmd.Process.Kill()
		err = fmt.Errorf("relay did not stop within 20s of SIGTERM: %v", <-r.exited)
	}
	r.exited <- err
	select {
	case <-r.stop:
	default:
		close(r.stop)
	}
	if r.done != nil {
		<-r.done
	}
	return err
}

// logBuffer collects the relay's stderr.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// dialFrom dials the relay from source address ip (a 127.0.0.0/8 address
// on loopback).
func dialFrom(ctx context.Context, r link.Relay, ip net.IP) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}}
	return d.DialContext(ctx, "tcp", r.Endpoints[0].Addr)
}

// sourceIP is the i-th of n attacker addresses, 127.1.x.y (the honest
// client uses 127.0.0.1).
func sourceIP(i, n int) net.IP {
	k := i % max(n, 1)
	return net.IPv4(127, 1, byte(k/250), byte(k%250+1))
}
