// Command ferry is the Ferry messenger's command-line client and terminal
// chat: a thin layer of flags, output formats and a terminal UI over the
// client library (package ferry). docs/client.md documents the commands,
// their output and their exit statuses, which scripts may rely on:
//
//	0  success
//	1  failure (one sentence on stderr; local state unchanged)
//	2  usage error
//	3  the relay could not be reached (messages stay in the outbox)
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
	"unicode"

	"github.com/mdp/qrterminal/v3"

	"github.com/ferry-im/ferry"
)

// Exit statuses.
const (
	exitOK          = 0
	exitFail        = 1
	exitUsage       = 2
	exitUnreachable = 3
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `usage: ferry [--home DIR] [--passphrase-file FILE] COMMAND [ARGS]

commands:
  init --relay LINK --name NAME   create a profile using the relay LINK
  invite [--qr]                   print a one-time invite link (--qr: also draw it)
  add LINK                        accept an invite; prints the new contact's name
  send [--lines] CONTACT TEXT     send TEXT (- reads stdin; --lines: one message per line)
  read [--wait D] [--json] [--all]  print messages that arrived since the last read
  contacts [--safety]             list contacts (--safety: with safety numbers)
  chat                            open the terminal chat

The profile directory is --home, else $FERRY_HOME, else ~/.ferry. The profile
key is protected by the passphrase in $FERRY_PASSPHRASE or --passphrase-file
when one is given at init.
`

// env is one invocation's environment.
type env struct {
	ctx      context.Context
	stdin    io.Reader
	stdout   io.Writer
	stderr   io.Writer
	home     string
	passFile string
}

// fail is an error with an exit status.
type fail struct {
	code int
	msg  string
}

func (f *fail) Error() string { return f.msg }

func usageErr(format string, args ...any) error {
	return &fail{exitUsage, fmt.Sprintf(format, args...)}
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{ctx: ctx, stdin: stdin, stdout: stdout, stderr: stderr}
	global := flag.NewFlagSet("ferry", flag.ContinueOnError)
	global.SetOutput(io.Discard)
	global.StringVar(&e.home, "home", "", "profile directory")
	global.StringVar(&e.passFile, "passphrase-file", "", "file whose first line is the passphrase")
	if err := global.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usage)
			return exitOK
		}
		fmt.Fprintf(stderr, "ferry: %v; run ferry help for usage.\n", err)
		return exitUsage
	}
	args = global.Args()
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	cmds := map[string]func(*env, []string) error{
		"init": cmdInit, "invite": cmdInvite, "add": cmdAdd, "send": cmdSend,
		"read": cmdRead, "contacts": cmdContacts, "chat": cmdChat,
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		if args[0] == "help" {
			fmt.Fprint(stdout, usage)
			return exitOK
		}
		fmt.Fprintf(stderr, "ferry: unknown command %q; run ferry help for the list.\n", args[0])
		return exitUsage
	}
	err := cmd(e, args[1:])
	if err == nil {
		return exitOK
	}
	code, msg := explain(err)
	fmt.Fprintln(stderr, "ferry: "+msg)
	return code
}

// explain turns an error into an exit status and one sentence.
func explain(err error) (int, string) {
	var f *fail
	switch {
	case errors.As(err, &f):
		return f.code, f.msg
	case errors.Is(err, ferry.ErrQueued):
		return exitUnreachable, "the relay could not be reached; the message is kept in the outbox and the next ferry command that connects will deliver it."
	case errors.Is(err, ferry.ErrUnreachable):
		return exitUnreachable, "the relay could not be reached; check your network or try again later."
	case errors.Is(err, ferry.ErrWrongPassphrase):
		return exitFail, "wrong passphrase; nothing was changed."
	case errors.Is(err, context.Canceled):
		return exitFail, "interrupted."
	}
	msg := err.Error()
	if !strings.HasSuffix(msg, ".") {
		msg += "."
	}
	return exitFail, msg
}

// flags makes a command's flag set; --home and --passphrase-file are
// accepted after the command too.
func (e *env) flags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("ferry "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&e.home, "home", e.home, "profile directory")
	fs.StringVar(&e.passFile, "passphrase-file", e.passFile, "file whose first line is the passphrase")
	return fs
}

func parse(fs *flag.FlagSet, args []string, nargs int, what string) ([]string, error) {
	// Allow flags after positional arguments: ferry send bob hi --home x.
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, usageErr("%s: %v", fs.Name(), err)
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if nargs >= 0 && len(pos) != nargs {
		return nil, usageErr("usage: %s %s", fs.Name(), what)
	}
	return pos, nil
}

func (e *env) config() (ferry.Config, error) {
	home := e.home
	if home == "" {
		home = os.Getenv("FERRY_HOME")
	}
	if home == "" {
		h, err := os.UserHomeDir()
		if err != nil {
			return ferry.Config{}, errors.New("no profile directory: use --home or set FERRY_HOME")
		}
		home = filepath.Join(h, ".ferry")
	}
	cfg := ferry.Config{Home: home, Logger: logger(e.stderr)}
	if e.passFile != "" {
		b, err := os.ReadFile(e.passFile)
		if err != nil {
			return cfg, fmt.Errorf("cannot read the passphrase file: %v", err)
		}
		line, _, _ := strings.Cut(string(b), "\n")
		cfg.Passphrase = []byte(strings.TrimSuffix(line, "\r"))
	} else if p, ok := os.LookupEnv("FERRY_PASSPHRASE"); ok {
		cfg.Passphrase = []byte(p)
	}
	return cfg, nil
}

// logger logs to stderr at the level in $FERRY_LOG (debug, info, warn);
// by default nothing is logged.
func logger(w io.Writer) *slog.Logger {
	var lvl slog.Level
	switch os.Getenv("FERRY_LOG") {
	case "debug":
		lvl = slog.LevelDebug
	case "info":
		lvl = slog.LevelInfo
	case "warn":
		lvl = slog.LevelWarn
	default:
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lvl}))
}

func (e *env) open() (*ferry.Client, error) {
	cfg, err := e.config()
	if err != nil {
		return nil, err
	}
	c, err := ferry.Open(e.ctx, cfg)
	if errors.Is(err, ferry.ErrNoProfile) {
		return nil, fmt.Errorf("no profile in %s; run ferry init first", cfg.Home)
	}
	return c, err
}

func cmdInit(e *env, args []string) error {
	fs := e.flags("init")
	relay := fs.String("relay", "", "relay link")
	name := fs.String("name", "", "your name, as contacts see it")
	if _, err := parse(fs, args, 0, "--relay LINK --name NAME"); err != nil {
		return err
	}
	if *relay == "" || *name == "" {
		return usageErr("usage: ferry init --relay LINK --name NAME")
	}
	cfg, err := e.config()
	if err != nil {
		return err
	}
	c, err := ferry.Init(e.ctx, cfg, *relay, *name)
	if c != nil {
		defer c.Close()
	}
	if errors.Is(err, ferry.ErrExists) {
		return fmt.Errorf("a profile already exists in %s", cfg.Home)
	}
	if errors.Is(err, ferry.ErrUnreachable) {
		return &fail{exitUnreachable, "profile created, but the relay could not be reached; the next ferry command that connects will register with it."}
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "ferry: profile %q created in %s\n", *name, cfg.Home)
	return nil
}

func cmdInvite(e *env, args []string) error {
	fs := e.flags("invite")
	qr := fs.Bool("qr", false, "also draw the link as a QR code on stderr")
	if _, err := parse(fs, args, 0, "[--qr]"); err != nil {
		return err
	}
	c, err := e.open()
	if err != nil {
		return err
	}
	defer c.Close()
	inv, err := c.Invite(e.ctx)
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, inv)
	if *qr {
		qrterminal.GenerateWithConfig(inv, qrterminal.Config{
			Level: qrterminal.L, Writer: e.stderr, HalfBlocks: true,
			BlackChar: qrterminal.BLACK_BLACK, WhiteBlackChar: qrterminal.WHITE_BLACK,
			WhiteChar: qrterminal.WHITE_WHITE, BlackWhiteChar: qrterminal.BLACK_WHITE, QuietZone: 2,
		})
	}
	// Make sure the relay has the prekeys the invite needs; the invite
	// works anyway once any later command connects.
	if err := c.Sync(e.ctx, ferry.SyncOptions{}); err != nil {
		fmt.Fprintln(e.stderr, "ferry: note: the relay could not be reached; the invite works once a later ferry command connects.")
	}
	return nil
}

func cmdAdd(e *env, args []string) error {
	fs := e.flags("add")
	pos, err := parse(fs, args, 1, "LINK")
	if err != nil {
		return err
	}
	c, err := e.open()
	if err != nil {
		return err
	}
	defer c.Close()
	name, err := c.Accept(e.ctx, strings.TrimSpace(pos[0]))
	if errors.Is(err, ferry.ErrQueued) {
		fmt.Fprintln(e.stdout, name)
		return &fail{exitUnreachable, "contact added, but the introduction could not be sent; the next ferry command that connects will send it."}
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, name)
	return nil
}

func cmdSend(e *env, args []string) error {
	fs := e.flags("send")
	lines := fs.Bool("lines", false, "send each line of TEXT as its own message")
	pos, err := parse(fs, args, 2, "[--lines] CONTACT TEXT (TEXT - reads stdin)")
	if err != nil {
		return err
	}
	text := pos[1]
	if text == "-" {
		b, err := io.ReadAll(io.LimitReader(e.stdin, 64<<20))
		if err != nil {
			return fmt.Errorf("cannot read stdin: %v", err)
		}
		text = string(b)
		if !*lines {
			text = strings.TrimSuffix(strings.TrimSuffix(text, "\n"), "\r")
		}
	}
	var texts []string
	if *lines {
		sc := bufio.NewScanner(strings.NewReader(text))
		sc.Buffer(nil, ferry.MaxText+1)
		for sc.Scan() {
			if l := strings.TrimSuffix(sc.Text(), "\r"); l != "" {
				texts = append(texts, l)
			}
		}
		if err := sc.Err(); err != nil {
			return fmt.Errorf("a line is longer than the limit of %d bytes", ferry.MaxText)
		}
		if len(texts) == 0 {
			return usageErr("nothing to send")
		}
	} else {
		texts = []string{text}
	}
	c, err := e.open()
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.SendMany(e.ctx, pos[0], texts)
	if errors.Is(err, ferry.ErrUnknownContact) {
		// An invitee may have just accepted: learn new contacts, retry.
		if serr := c.Sync(e.ctx, ferry.SyncOptions{}); serr == nil {
			_, err = c.SendMany(e.ctx, pos[0], texts)
		}
	}
	if errors.Is(err, ferry.ErrUnknownContact) {
		return fmt.Errorf("no contact named %q (ferry contacts lists them)", pos[0])
	}
	return err
}

// jsonMessage is one line of ferry read --json.
type jsonMessage struct {
	ID       string `json:"id"`
	From     string `json:"from"`
	To       string `json:"to"`
	Sent     string `json:"sent"`
	Received string `json:"received,omitempty"`
	Text     string `json:"text"`
	Outgoing bool   `json:"outgoing"`
	State    string `json:"state"`
}

func cmdRead(e *env, args []string) error {
	fs := e.flags("read")
	wait := fs.Duration("wait", 0, "stay connected this long, printing messages as they arrive")
	asJSON := fs.Bool("json", false, "print one JSON object per line")
	all := fs.Bool("all", false, "print the whole history")
	if _, err := parse(fs, args, 0, "[--wait DURATION] [--json] [--all]"); err != nil {
		return err
	}
	c, err := e.open()
	if err != nil {
		return err
	}
	defer c.Close()
	out := bufio.NewWriter(e.stdout)
	print := func(ms []*ferry.Message) error {
		for _, m := range ms {
			from, to := m.Contact, c.Name()
			if m.Outgoing {
				from, to = c.Name(), m.Contact
			}
			if *asJSON {
				j := jsonMessage{ID: m.IDString(), From: from, To: to, Sent: m.Sent.UTC().Format(time.RFC3339Nano),
					Text: m.Text, Outgoing: m.Outgoing, State: m.State.String()}
				if !m.Received.IsZero() {
					j.Received = m.Received.UTC().Format(time.RFC3339Nano)
				}
				b, _ := json.Marshal(j)
				out.Write(append(b, '\n'))
			} else {
				text := sanitize(m.Text)
				if m.Outgoing {
					fmt.Fprintf(out, "%s %s -> %s: %s\n", m.Sent.Local().Format("2006-01-02 15:04:05"), from, to, text)
				} else {
					fmt.Fprintf(out, "%s %s: %s\n", m.Sent.Local().Format("2006-01-02 15:04:05"), from, text)
				}
			}
		}
		return out.Flush()
	}
	// showUnread prints what arrived since the last read and marks it
	// shown (which sends read receipts).
	showUnread := func() error {
		ms, err := c.Messages(e.ctx, ferry.Query{Unread: true})
		if err != nil || len(ms) == 0 {
			return err
		}
		if err := print(ms); err != nil {
			return err
		}
		return c.MarkShown(e.ctx, ms)
	}
	syncErr := c.Sync(e.ctx, ferry.SyncOptions{})
	if *all {
		ms, err := c.Messages(e.ctx, ferry.Query{})
		if err != nil {
			return err
		}
		if err := print(ms); err != nil {
			return err
		}
		if err := c.MarkShown(e.ctx, ms); err != nil {
			return err
		}
	} else if err := showUnread(); err != nil {
		return err
	}
	if *wait > 0 {
		var cbErr error
		err := c.Sync(e.ctx, ferry.SyncOptions{Wait: *wait, OnMessages: func([]*ferry.Message) {
			if err := showUnread(); err != nil && cbErr == nil {
				cbErr = err
			}
		}})
		if errors.Is(err, context.Canceled) {
			// Interrupted (Ctrl-C): the usual way to end a long wait.
			return cbErr
		}
		if err == nil {
			err = cbErr
		}
		if err == nil {
			err = showUnread()
		}
		return err
	}
	if syncErr != nil {
		if errors.Is(syncErr, ferry.ErrUnreachable) {
			return &fail{exitUnreachable, "the relay could not be reached; showing only messages already received."}
		}
		return syncErr
	}
	return nil
}

func cmdContacts(e *env, args []string) error {
	fs := e.flags("contacts")
	safety := fs.Bool("safety", false, "also print each contact's safety number")
	if _, err := parse(fs, args, 0, "[--safety]"); err != nil {
		return err
	}
	c, err := e.open()
	if err != nil {
		return err
	}
	defer c.Close()
	ks, err := c.Contacts(e.ctx)
	if err != nil {
		return err
	}
	for _, k := range ks {
		if !*safety {
			fmt.Fprintln(e.stdout, k.Name)
			continue
		}
		sn, err := c.SafetyNumber(e.ctx, k.Name)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "%s\t%s\n", k.Name, sn)
	}
	return nil
}

// sanitize makes text safe to print on a terminal: a contact must not be
// able to send escape sequences that move the cursor, retitle the window
// or rewrite earlier lines. Newlines become \n, tabs a space, and every
// other control or format character a \x or \u escape.
func sanitize(text string) string {
	var b strings.Builder
	for _, r := range text {
		switch {
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteByte(' ')
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case unicode.IsControl(r) || unicode.Is(unicode.Cf, r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}
