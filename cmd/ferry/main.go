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
	"context"
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

	"github.com/ferry-im/ferry"
	"github.com/ferry-im/ferry/internal/version"
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

// command is one subcommand.
type command struct {
	name, args, summary string
	run                 func(e *env, args []string) error
}

// commands lists the subcommands in the order usage shows them. (A
// function, not a variable: the commands refer back to it.)
func commands() []command {
	return []command{
		{"init", "--relay LINK --name NAME", "create a profile using the relay LINK", cmdInit},
		{"invite", "[--qr]", "print a one-time invite link (--qr: also draw it)", cmdInvite},
		{"add", "[--wait D] LINK", "accept an invite; prints the new contact's name", cmdAdd},
		{"send", "[--lines] CONTACT|GROUP TEXT", "send TEXT (- reads stdin; --lines: one message per line)", cmdSend},
		{"send", "CONTACT|GROUP --file PATH|--voice PATH|--record D", "send a file, a voice note, or one recorded now", cmdSend},
		{"read", "[--wait D] [--json] [--all]", "print messages that arrived since the last read", cmdRead},
		{"save", "MESSAGE-ID PATH", "save a received attachment to PATH (downloading it if needed)", cmdSave},
		{"play", "MESSAGE-ID", "play a voice note with the system's player", cmdPlay},
		{"set", "auto-download SIZE", "download attachments up to SIZE by themselves (default 100MB)", cmdSet},
		{"contacts", "[--safety]", "list contacts and their status (--safety: with safety numbers)", cmdContacts},
		{"contact", "rename|remove|block|unblock NAME [NEW]", "rename, remove, block or unblock a contact", cmdContact},
		{"group", "create GROUP CONTACT...|add|remove|leave|rename|admins|list", "make and manage groups (ferry send GROUP TEXT talks in one)", cmdGroup},
		{"reply", "CONTACT MESSAGE-ID TEXT", "send TEXT quoting a message (ids: ferry read --json)", cmdReply},
		{"react", "CONTACT MESSAGE-ID EMOJI", "react to a message (\"\" takes your reaction back)", cmdReact},
		{"edit", "CONTACT MESSAGE-ID TEXT", "change the text of your message for everyone (within 24 hours)", cmdEdit},
		{"delete", "CONTACT MESSAGE-ID", "delete your message for everyone (within 24 hours)", cmdDelete},
		{"timer", "CONTACT [DURATION|off]", "show or set disappearing messages (30s, 5m, 1h, 168h...)", cmdTimer},
		{"settings", "[typing on|off]", "show or change settings (typing indicators)", cmdSettings},
		{"chat", "", "open the terminal chat", cmdChat},
		{"web", "[--listen ADDR] [--no-browser]", "open the Ferry app in your browser", cmdWeb},
		{"passphrase", "[--new-file FILE | --none]", "change or remove the profile's passphrase", cmdPassphrase},
		{"backup", "FILE", "write an encrypted copy of the profile to FILE", cmdBackup},
		{"restore", "FILE", "make the profile from a backup FILE (on a new machine)", cmdRestore},
		{"status", "[--json]", "connect and say over which transport, and why it changed", cmdStatus},
		{"proxy", "[URL | off]", "show or set the profile's upstream proxy (socks5:// or http://)", cmdProxy},
	}
}

func usage() string {
	var b strings.Builder
	b.WriteString("usage: ferry [--home DIR] [--passphrase-file FILE] [--transport NAME]... [--proxy URL] COMMAND [ARGS]\n       ferry --version\n\ncommands:\n")
	for _, c := range commands() {
		left := c.name
		if c.args != "" {
			left += " " + c.args
		}
		fmt.Fprintf(&b, "  %-40s %s\n", left, c.summary)
	}
	b.WriteString(`
ferry COMMAND --help shows a command's flags. The profile directory is
--home, else $FERRY_HOME, else ~/.ferry. The profile key is protected by the
passphrase in $FERRY_PASSPHRASE or --passphrase-file when one was given at
init. --transport NAME (repeatable) restricts Ferry to the named transports,
tried in that order (this Ferry has: ` + strings.Join(ferry.DefaultTransports(nil).Names(), ", ") + `).
--proxy URL sends every transport through an upstream proxy
(socks5://[user:password@]host:port or http://...), overriding the
profile's own (ferry proxy URL keeps one in the profile; off: none).
`)
	return b.String()
}

// env is one invocation's environment and global flags.
type env struct {
	ctx        context.Context
	stdin      io.Reader
	stdout     io.Writer
	stderr     io.Writer
	home       string
	passFile   string
	transports listFlag
	proxy      string // --proxy URL, "off" for none
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// fail is an error with an exit status.
type fail struct {
	code int
	msg  string
}

func (f *fail) Error() string { return f.msg }

func usageErr(format string, args ...any) error {
	return &fail{exitUsage, fmt.Sprintf(format, args...)}
}

// errShown means help was asked for and printed.
var errShown = errors.New("help shown")

// globals adds the global flags to fs. They are accepted before the
// command and after it. (An upstream proxy flag will set
// ferry.Config.NetDialer from here.)
func (e *env) globals(fs *flag.FlagSet) {
	fs.StringVar(&e.home, "home", e.home, "profile `DIR`ectory (default $FERRY_HOME, else ~/.ferry)")
	fs.StringVar(&e.passFile, "passphrase-file", e.passFile, "`FILE` whose first line is the profile's passphrase")
	fs.Var(&e.transports, "transport", "use only the transport `NAME` (repeatable: tried in order)")
	fs.StringVar(&e.proxy, "proxy", e.proxy, "reach relays through the proxy `URL` (socks5://[user:pass@]host:port or http://...; off: none), overriding the profile's")
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{ctx: ctx, stdin: stdin, stdout: stdout, stderr: stderr}
	global := flag.NewFlagSet("ferry", flag.ContinueOnError)
	global.SetOutput(io.Discard)
	e.globals(global)
	showVersion := global.Bool("version", false, "print the version and exit")
	if err := global.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usage())
			return exitOK
		}
		fmt.Fprintf(stderr, "ferry: %v; run ferry help for usage.\n", err)
		return exitUsage
	}
	if *showVersion {
		fmt.Fprintln(stdout, version.String("ferry"))
		return exitOK
	}
	args = global.Args()
	if len(args) == 0 {
		fmt.Fprint(stderr, usage())
		return exitUsage
	}
	if args[0] == "help" {
		return help(e, args[1:])
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return e.finish(c.run(e, args[1:]))
		}
	}
	fmt.Fprintf(stderr, "ferry: unknown command %q; run ferry help for the list.\n", args[0])
	return exitUsage
}

// help prints the usage, or a command's.
func help(e *env, args []string) int {
	if len(args) == 0 {
		fmt.Fprint(e.stdout, usage())
		return exitOK
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return e.finish(c.run(e, []string{"--help"}))
		}
	}
	fmt.Fprintf(e.stderr, "ferry: unknown command %q; run ferry help for the list.\n", args[0])
	return exitUsage
}

// finish turns a command's error into its exit status and sentence.
func (e *env) finish(err error) int {
	if err == nil || errors.Is(err, errShown) {
		return exitOK
	}
	code, msg := explain(err)
	fmt.Fprintln(e.stderr, "ferry: "+msg)
	return code
}

// explain turns an error into an exit status and one sentence.
func explain(err error) (int, string) {
	var f *fail
	switch {
	case errors.As(err, &f):
		return f.code, f.msg
	case errors.Is(err, ferry.ErrRefused):
		return exitFail, sentence(err.Error())
	case errors.Is(err, ferry.ErrQueued):
		return exitUnreachable, "the message is kept in the outbox and the next ferry command that connects will deliver it: " + why(err)
	case errors.Is(err, ferry.ErrUnreachable):
		return exitUnreachable, why(err)
	case errors.Is(err, ferry.ErrWrongPassphrase):
		return exitFail, "wrong passphrase; nothing was changed."
	case errors.Is(err, context.Canceled):
		return exitFail, "interrupted."
	}
	return exitFail, sentence(err.Error())
}

// why says in one sentence why a relay could not be reached.
func why(err error) string {
	var de *ferry.DialError
	if errors.As(err, &de) {
		return sentence(de.Error())
	}
	if errors.Is(err, ferry.ErrBusy) {
		return "the relay kept asking Ferry to slow down (it limits how often one device may ask); wait a minute and run the command again."
	}
	return "the relay could not be reached (the connection was lost); check your network or try again later."
}

func sentence(s string) string {
	if !strings.HasSuffix(s, ".") {
		s += "."
	}
	return s
}

// flags makes a command's flag set, with the global flags; on --help,
// parse prints the command's usage.
func (e *env) flags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("ferry "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	e.globals(fs)
	return fs
}

// parse parses a command's arguments, allowing flags after positional
// ones (ferry send bob hi --home x), and checks there are nargs positional
// arguments (any number if nargs < 0).
func (e *env) parse(fs *flag.FlagSet, args []string, nargs int) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				e.commandUsage(fs)
				return nil, errShown
			}
			return nil, usageErr("%s: %v; run %s --help for its flags", fs.Name(), err, fs.Name())
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if nargs >= 0 && len(pos) != nargs {
		return nil, usageErr("usage: %s", e.synopsis(fs))
	}
	return pos, nil
}

func (e *env) synopsis(fs *flag.FlagSet) string {
	name := strings.TrimPrefix(fs.Name(), "ferry ")
	for _, c := range commands() {
		if c.name == name {
			return strings.TrimSpace("ferry " + c.name + " " + c.args)
		}
	}
	return fs.Name()
}

// commandUsage prints a command's synopsis, what it does and its flags.
func (e *env) commandUsage(fs *flag.FlagSet) {
	name := strings.TrimPrefix(fs.Name(), "ferry ")
	for _, c := range commands() {
		if c.name == name {
			fmt.Fprintf(e.stdout, "usage: %s\n\n%s.\n\n", strings.TrimSpace("ferry "+c.name+" "+c.args), strings.ToUpper(c.summary[:1])+c.summary[1:])
		}
	}
	fmt.Fprint(e.stdout, "flags:\n")
	fs.SetOutput(e.stdout)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
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
	cfg := ferry.Config{Home: home, Logger: logger(e.stderr), TransportOrder: e.transports}
	if err := e.applyProxy(&cfg); err != nil {
		return cfg, err
	}
	if e.passFile != "" {
		p, err := readPassphrase(e.passFile)
		if err != nil {
			return cfg, err
		}
		cfg.Passphrase = p
	} else if p, ok := os.LookupEnv("FERRY_PASSPHRASE"); ok {
		cfg.Passphrase = []byte(p)
	}
	return cfg, nil
}

// readPassphrase reads the first line of a file.
func readPassphrase(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read the passphrase file: %v", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return []byte(strings.TrimSuffix(line, "\r")), nil
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

// with parses a command's arguments (as parse), opens the profile, runs
// fn with it and the positional arguments, and closes it.
func (e *env) with(fs *flag.FlagSet, args []string, nargs int, fn func(c *ferry.Client, pos []string) error) error {
	pos, err := e.parse(fs, args, nargs)
	if err != nil {
		return err
	}
	return e.client(func(c *ferry.Client) error { return fn(c, pos) })
}

// client opens the profile, runs fn with it and closes it.
func (e *env) client(fn func(c *ferry.Client) error) error {
	c, err := e.open()
	if err != nil {
		return err
	}
	defer c.Close()
	return fn(c)
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
