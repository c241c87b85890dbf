package attack

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/internal/load"
	"github.com/ferry-im/ferry/link"
)

// The honest client runs in a process of its own, as it would on its own
// device: in the attacker's process its goroutines would queue behind
// thousands of attacking ones, and the round trips would time the
// attacker's scheduler, not the relay. The child is the test binary
// itself, started with honestEnv set (TestMain calls HonestMain).
//
// The parent and the child talk in lines: the child prints "ready" once
// its recipient has subscribed; the parent writes "go" once the attack is
// set up; the child measures for the spec's duration and prints
// "measured"; the parent stops the attack and writes "drain"; the child
// counts what was lost, prints its result as JSON and exits.

// honestEnv names the environment variable that holds the child's spec.
const honestEnv = "FERRY_ATTACK_HONEST"

// honestSpec is what the child needs.
type honestSpec struct {
	Link      string
	Victim    channel.KeyPair
	VictimBox [16]byte
	Duration  time.Duration
}

// honestResult is what the child saw.
type honestResult struct {
	RoundTrips, Failed, Refused, Lost int
	FirstFailure                      string
	P50, P99, Max                     time.Duration
	Err                               string // the child could not measure
}

// IsHonestChild reports whether this process was started as the honest
// client of an attack; if so, TestMain must call HonestMain and exit with
// its code.
func IsHonestChild() bool { return os.Getenv(honestEnv) != "" }

// HonestMain runs the honest client of an attack (see IsHonestChild),
// talking to its parent on stdin and stdout, and returns the exit code.
func HonestMain() int {
	res := honestChild(os.Stdin, os.Stdout)
	if res.Err != "" {
		fmt.Fprintln(os.Stderr, "honest client:", res.Err)
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil || res.Err != "" {
		return 1
	}
	return 0
}

func honestChild(stdin io.Reader, stdout io.Writer) honestResult {
	var spec honestSpec
	if err := json.Unmarshal([]byte(os.Getenv(honestEnv)), &spec); err != nil {
		return honestResult{Err: "read the spec: " + err.Error()}
	}
	l, err := link.ParseRelay(spec.Link)
	if err != nil {
		return honestResult{Err: err.Error()}
	}
	ctx := context.Background()
	h, err := newHonest(ctx, &Env{Relay: &Relay{Link: l}, Victim: spec.Victim, VictimBox: spec.VictimBox})
	if err != nil {
		return honestResult{Err: err.Error()}
	}
	defer h.close()
	in := bufio.NewScanner(stdin)
	fmt.Fprintln(stdout, "ready")
	if !in.Scan() || in.Text() != "go" {
		return honestResult{Err: "the parent did not say go"}
	}
	res := h.measure(ctx, spec.Duration)
	fmt.Fprintln(stdout, "measured")
	if !in.Scan() || in.Text() != "drain" {
		return honestResult{Err: "the parent did not say drain"}
	}
	if res.Lost, err = h.lost(ctx); err != nil {
		res.Err = err.Error()
	}
	return res
}

// measure sends to the victim every 20 ms for d (every tenth time from a
// new connection, timed from the dial).
func (h *honest) measure(ctx context.Context, d time.Duration) honestResult {
	var res honestResult
	var hist load.Hist
	end := time.Now().Add(d)
	for i := 0; time.Now().Before(end) && ctx.Err() == nil; i++ {
		trip := h.roundTrip
		if i%10 == 9 {
			trip = h.freshRoundTrip // a client coming online must get in too
		}
		d, err := trip(ctx)
		switch {
		case errors.Is(err, errRefused):
			res.Refused++
		case err != nil:
			res.Failed++
			if res.FirstFailure == "" {
				res.FirstFailure = err.Error()
			}
		default:
			hist.Add(d)
			res.RoundTrips++
			res.Max = max(res.Max, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
	res.P50, res.P99 = hist.Quantile(0.5), hist.Quantile(0.99)
	return res
}

// honestProc is the parent's handle on the honest child.
type honestProc struct {
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Reader
	stderr logBuffer
}

// startHonest starts the honest child for e and waits until its recipient
// has subscribed.
func startHonest(ctx context.Context, e *Env, d time.Duration) (*honestProc, error) {
	bin, err := os.Executable()
	if err != nil {
		return nil, err
	}
	spec, err := json.Marshal(honestSpec{Link: e.Relay.Link.String(), Victim: e.Victim, VictimBox: e.VictimBox, Duration: d})
	if err != nil {
		return nil, err
	}
	p := &honestProc{cmd: exec.Command(bin)}
	p.cmd.Env = append(os.Environ(), honestEnv+"="+string(spec))
	p.cmd.Stderr = &p.stderr
	// The child dies with the process that started it.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if p.in, err = p.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	p.out = bufio.NewReader(out)
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the honest client: %w", err)
	}
	if err := p.expect(ctx, "ready", time.Minute); err != nil {
		p.kill()
		return nil, err
	}
	return p, nil
}

// expect waits up to wait for the child to print line.
func (p *honestProc) expect(ctx context.Context, line string, wait time.Duration) error {
	got := make(chan string, 1)
	go func() {
		s, _ := p.out.ReadString('\n')
		got <- strings.TrimSpace(s)
	}()
	select {
	case s := <-got:
		if s != line {
			return fmt.Errorf("honest client: printed %q, want %q; stderr: %s", s, line, p.stderr.String())
		}
		return nil
	case <-time.After(wait):
		p.kill() // ends the read above
		return fmt.Errorf("honest client: no %q within %v", line, wait)
	case <-ctx.Done():
		p.kill()
		return ctx.Err()
	}
}

// say writes a line to the child.
func (p *honestProc) say(line string) error {
	_, err := io.WriteString(p.in, line+"\n")
	return err
}

// result tells the child to drain and returns what it saw.
func (p *honestProc) result() (honestResult, error) {
	var res honestResult
	if err := p.say("drain"); err != nil {
		return res, err
	}
	derr := json.NewDecoder(p.out).Decode(&res)
	werr := p.cmd.Wait()
	switch {
	case derr != nil:
		return res, fmt.Errorf("honest client: no result (%v, %v); stderr: %s", derr, werr, p.stderr.String())
	case res.Err != "":
		return res, errors.New("honest client: " + res.Err)
	}
	return res, nil
}

func (p *honestProc) kill() {
	p.cmd.Process.Kill()
	p.cmd.Wait()
}
