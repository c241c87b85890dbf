package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/mdp/qrterminal/v3"

	"github.com/ferry-im/ferry"
)

func cmdInit(e *env, args []string) error {
	fs := e.flags("init")
	relay := fs.String("relay", "", "the relay's `LINK` (ferry-relay link prints it)")
	name := fs.String("name", "", "your `NAME`, as contacts see it")
	if _, err := e.parse(fs, args, 0); err != nil {
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
		return &fail{exitUnreachable, "profile created, but the next ferry command that connects must register it with the relay: " + why(err)}
	}
	if errors.Is(err, ferry.ErrRegisterLater) {
		return &fail{exitUnreachable, err.Error() + "; the next ferry command that connects registers it."}
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
	return e.with(fs, args, 0, func(c *ferry.Client, _ []string) error {
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
		// The relay must have the prekeys the invite needs, and the inviter
		// must connect to take the answer: say so if the relay is out of reach.
		if err := c.Sync(e.ctx, ferry.SyncOptions{}); errors.Is(err, ferry.ErrUnreachable) {
			return &fail{exitUnreachable, "the invite above is made, but your relay could not be reached, so it works only once a later ferry command connects: " + why(err)}
		} else if err != nil {
			return err
		}
		return nil
	})
}

func cmdAdd(e *env, args []string) error {
	fs := e.flags("add")
	wait := fs.Duration("wait", 5*time.Second, "how long to wait for the inviter's Ferry to answer (0: do not wait)")
	return e.with(fs, args, 1, func(c *ferry.Client, pos []string) error {
		k, err := c.Accept(e.ctx, strings.TrimSpace(pos[0]))
		if errors.Is(err, ferry.ErrQueued) {
			fmt.Fprintln(e.stdout, k.Name)
			return &fail{exitUnreachable, "contact added, but the introduction waits in the outbox until a later ferry command connects: " + why(err)}
		}
		if errors.Is(err, ferry.ErrInviteUnknown) {
			return &fail{exitUnreachable, "the inviter's relay does not know this invite yet: ask the inviter to open Ferry (their next connection registers it) and run ferry add again; an invite that was used or is older than 7 days never works."}
		}
		if err != nil {
			return err
		}
		fmt.Fprintln(e.stdout, k.Name)
		if *wait <= 0 {
			return nil
		}
		switch answer(e, c, k, *wait) {
		case ferry.ContactConfirmed:
			fmt.Fprintf(e.stderr, "ferry: %s's Ferry confirmed; you can talk now.\n", k.Name)
		case ferry.ContactRefused:
			return fmt.Errorf("%s", lastNotice(e, c, k.Conversation))
		default:
			fmt.Fprintf(e.stderr, "ferry: %s's Ferry has not answered yet; %s sees you, and your messages, when it next connects.\n", k.Name, k.Name)
		}
		return nil
	})
}

// answer waits up to d for the inviter's Ferry to confirm or refuse k.
func answer(e *env, c *ferry.Client, k ferry.Contact, d time.Duration) ferry.ContactStatus {
	ctx, cancel := context.WithTimeout(e.ctx, d)
	defer cancel()
	status := k.Status
	c.Sync(ctx, ferry.SyncOptions{Wait: d, OnContact: func(got ferry.Contact) {
		if got.ID == k.ID && got.Status != ferry.ContactPending {
			status = got.Status
			cancel()
		}
	}})
	return status
}

// lastNotice returns the text of the last notice in a conversation.
func lastNotice(e *env, c *ferry.Client, conv ferry.ConversationID) string {
	ms, err := c.Messages(e.ctx, ferry.Query{Conversation: conv})
	for i := len(ms) - 1; err == nil && i >= 0; i-- {
		if ms[i].Kind == ferry.KindNotice {
			return ms[i].Text()
		}
	}
	return "the inviter's Ferry refused you as a contact; ask for a new invite"
}

func cmdSend(e *env, args []string) error {
	fs := e.flags("send")
	lines := fs.Bool("lines", false, "send each non-empty line of TEXT as its own message")
	file := fs.String("file", "", "send the file at `PATH` (a photo, video, document: any type)")
	voicePath := fs.String("voice", "", "send the Ogg Opus file at `PATH` as a voice note")
	record := fs.Duration("record", 0, "record a voice note of this `DURATION` from the microphone and send it")
	pos, err := e.parse(fs, args, -1)
	if err != nil {
		return err
	}
	attaching := 0
	for _, set := range []bool{*file != "", *voicePath != "", *record > 0} {
		if set {
			attaching++
		}
	}
	switch {
	case attaching > 1:
		return usageErr("give one of --file, --voice and --record")
	case attaching == 1 && len(pos) != 1:
		return usageErr("usage: ferry send CONTACT|GROUP --file PATH (or --voice PATH, --record DURATION)")
	case attaching == 0 && len(pos) != 2:
		return usageErr("usage: %s", e.synopsis(fs))
	}
	return e.client(func(c *ferry.Client) error {
		if attaching == 1 {
			return sendFile(e, c, pos[0], *file, *voicePath, *record)
		}
		texts, err := e.texts(pos[1], *lines)
		if err != nil {
			return err
		}
		return send(e, c, pos[0], texts)
	})
}

// send sends texts to the conversation named to.
func send(e *env, c *ferry.Client, to string, texts []string) error {
	conv, err := findConversation(e, c, to)
	if err != nil {
		return err
	}
	_, err = c.SendMany(e.ctx, conv.ID, texts)
	return err
}

// texts returns the messages to send: text, or stdin for "-", as one
// message or one per non-empty line.
func (e *env) texts(text string, lines bool) ([]string, error) {
	if text == "-" {
		b, err := io.ReadAll(io.LimitReader(e.stdin, 64<<20))
		if err != nil {
			return nil, fmt.Errorf("cannot read stdin: %v", err)
		}
		text = string(b)
		if !lines {
			text = strings.TrimSuffix(strings.TrimSuffix(text, "\n"), "\r")
		}
	}
	if !lines {
		if strings.TrimSpace(text) == "" {
			return nil, usageErr("nothing to send: the message is empty")
		}
		return []string{text}, nil
	}
	var out []string
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(nil, ferry.MaxText+1)
	for sc.Scan() {
		if l := strings.TrimSuffix(sc.Text(), "\r"); strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("a line is longer than the limit of %d bytes", ferry.MaxText)
	}
	if len(out) == 0 {
		return nil, usageErr("nothing to send: every line is empty")
	}
	return out, nil
}

func cmdContacts(e *env, args []string) error {
	fs := e.flags("contacts")
	safety := fs.Bool("safety", false, "also print each contact's safety number")
	long := fs.Bool("long", false, "also print each contact's status and when it was added")
	return e.with(fs, args, 0, func(c *ferry.Client, _ []string) error {
		ks, err := c.Contacts(e.ctx)
		if err != nil {
			return err
		}
		for _, k := range ks {
			cols := []string{k.Name}
			if *long {
				status := k.Status.String()
				if k.Blocked {
					status += ",blocked"
				}
				cols = append(cols, status, k.Added.Local().Format("2006-01-02"))
			}
			if *safety {
				sn, err := c.SafetyNumber(e.ctx, k.ID)
				if err != nil {
					return err
				}
				cols = append(cols, sn)
			}
			fmt.Fprintln(e.stdout, strings.Join(cols, "\t"))
		}
		return nil
	})
}

func cmdContact(e *env, args []string) error {
	fs := e.flags("contact")
	pos, err := e.parse(fs, args, -1)
	if err != nil {
		return err
	}
	want := map[string]int{"rename": 3, "remove": 2, "block": 2, "unblock": 2}
	if len(pos) == 0 || want[pos[0]] != len(pos) {
		return usageErr("usage: ferry contact rename NAME NEW | remove NAME | block NAME | unblock NAME")
	}
	c, err := e.open()
	if err != nil {
		return err
	}
	defer c.Close()
	k, err := c.FindContact(e.ctx, pos[1])
	if errors.Is(err, ferry.ErrUnknownContact) {
		return fmt.Errorf("no contact named %q (ferry contacts lists them)", pos[1])
	}
	if err != nil {
		return err
	}
	switch pos[0] {
	case "rename":
		return c.RenameContact(e.ctx, k.ID, pos[2])
	case "remove":
		return c.RemoveContact(e.ctx, k.ID)
	case "block":
		return c.BlockContact(e.ctx, k.ID, true)
	default:
		return c.BlockContact(e.ctx, k.ID, false)
	}
}

func cmdPassphrase(e *env, args []string) error {
	fs := e.flags("passphrase")
	newFile := fs.String("new-file", "", "`FILE` whose first line is the new passphrase (default $FERRY_NEW_PASSPHRASE)")
	none := fs.Bool("none", false, "remove the passphrase: keep the profile key in a 0600 file")
	if _, err := e.parse(fs, args, 0); err != nil {
		return err
	}
	var p []byte
	if !*none {
		var err error
		if p, err = secret(*newFile, "FERRY_NEW_PASSPHRASE", "--new-file FILE, FERRY_NEW_PASSPHRASE or --none"); err != nil {
			return err
		}
	}
	return e.client(func(c *ferry.Client) error { return c.ChangePassphrase(p) })
}

// secret reads a passphrase from file, else from the environment
// variable; it must not be empty.
func secret(file, envVar, how string) ([]byte, error) {
	var p []byte
	if file != "" {
		var err error
		if p, err = readPassphrase(file); err != nil {
			return nil, err
		}
	} else {
		p = []byte(os.Getenv(envVar))
	}
	if len(p) == 0 {
		return nil, usageErr("give the passphrase with %s", how)
	}
	return p, nil
}

// backupArgs parses the arguments of backup and restore: the backup FILE
// and the backup's passphrase.
func (e *env) backupArgs(name string, args []string) (string, []byte, error) {
	fs := e.flags(name)
	passFile := fs.String("backup-passphrase-file", "", "`FILE` whose first line is the backup's passphrase (default $FERRY_BACKUP_PASSPHRASE)")
	pos, err := e.parse(fs, args, 1)
	if err != nil {
		return "", nil, err
	}
	p, err := secret(*passFile, "FERRY_BACKUP_PASSPHRASE", "--backup-passphrase-file FILE or FERRY_BACKUP_PASSPHRASE")
	return pos[0], p, err
}

func cmdBackup(e *env, args []string) error {
	file, p, err := e.backupArgs("backup", args)
	if err != nil {
		return err
	}
	return e.client(func(c *ferry.Client) error { return backup(e, c, file, p) })
}

// backup writes c's backup to a new file.
func backup(e *env, c *ferry.Client, file string, p []byte) error {
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("cannot create the backup file: %v", err)
	}
	if err := c.Backup(e.ctx, f, p); err != nil {
		f.Close()
		os.Remove(file)
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("cannot write the backup file: %v", err)
	}
	fmt.Fprintf(e.stderr, "ferry: backup written to %s; restore it with ferry restore on the new machine, and stop using this profile there.\n", file)
	return nil
}

func cmdRestore(e *env, args []string) error {
	file, p, err := e.backupArgs("restore", args)
	if err != nil {
		return err
	}
	cfg, err := e.config()
	if err != nil {
		return err
	}
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("cannot read the backup file: %v", err)
	}
	defer f.Close()
	c, err := ferry.Restore(e.ctx, cfg, f, p)
	if errors.Is(err, ferry.ErrExists) {
		return fmt.Errorf("a profile already exists in %s; restore into an empty --home", cfg.Home)
	}
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Fprintf(e.stderr, "ferry: profile %q restored in %s\n", c.Name(), cfg.Home)
	return nil
}
