package main

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ferry-im/ferry"
)

// The conversation features' commands (docs/client.md section 6):
// reply, react, edit, delete, timer and settings.

type jsonReaction struct {
	Emoji string `json:"emoji"`
	From  string `json:"from"`
}

// featuresJSON adds a message's reply, edit, reactions and expiry to its
// JSON line.
func featuresJSON(j *jsonMessage, m *ferry.Message, me string) {
	if r, ok := m.Body.(*ferry.Reply); ok {
		j.ReplyTo = hex.EncodeToString(r.Quote.ID[:])
	}
	j.Edited = m.Edited
	for _, r := range m.Reactions {
		from := r.From
		if r.Outgoing {
			from = me
		}
		j.Reactions = append(j.Reactions, jsonReaction{Emoji: r.Emoji, From: from})
	}
	if !m.Expires.IsZero() {
		j.Expires = m.Expires.UTC().Format(time.RFC3339Nano)
	}
}

// featuresPlain is a message's text for ferry read: a reply starts with
// the start of what it quotes, an edited message ends with (edited), and
// reactions follow in brackets.
func featuresPlain(m *ferry.Message) string {
	text := m.Text()
	if r, ok := m.Body.(*ferry.Reply); ok {
		q := "(original not available)"
		if !r.Quote.Missing {
			q = strings.ReplaceAll(cutRunes(r.Quote.Text, 40), "\n", " ")
		}
		text = "[re: " + q + "] " + text
	}
	if m.Edited {
		text += " (edited)"
	}
	var rs []string
	for _, r := range m.Reactions {
		from := r.From
		if r.Outgoing {
			from = "me"
		}
		rs = append(rs, r.Emoji+" "+from)
	}
	if len(rs) > 0 {
		text += " [" + strings.Join(rs, ", ") + "]"
	}
	return text
}

func cutRunes(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n]) + "…"
}

// conversationNamed finds the conversation named name, learning new
// contacts first if it is unknown.
func conversationNamed(e *env, c *ferry.Client, name string) (ferry.ConversationID, error) {
	conv, err := c.FindConversation(e.ctx, name)
	if errors.Is(err, ferry.ErrUnknownContact) {
		if serr := c.Sync(e.ctx, ferry.SyncOptions{}); serr == nil {
			conv, err = c.FindConversation(e.ctx, name)
		}
	}
	if errors.Is(err, ferry.ErrUnknownContact) {
		return 0, fmt.Errorf("no contact named %q (ferry contacts lists them)", name)
	}
	return conv.ID, err
}

// onMessage runs a command of the form CONTACT MESSAGE-ID [ARG].
func onMessage(e *env, name string, nargs int, args []string, fn func(c *ferry.Client, conv ferry.ConversationID, id [16]byte, rest []string) error) error {
	fs := e.flags(name)
	return e.with(fs, args, nargs, func(c *ferry.Client, pos []string) error {
		id, err := messageID(pos[1])
		if err != nil {
			return err
		}
		conv, err := conversationNamed(e, c, pos[0])
		if err != nil {
			return err
		}
		return fn(c, conv, id, pos[2:])
	})
}

func cmdReply(e *env, args []string) error {
	return onMessage(e, "reply", 3, args, func(c *ferry.Client, conv ferry.ConversationID, id [16]byte, rest []string) error {
		texts, err := e.texts(rest[0], false)
		if err != nil {
			return err
		}
		_, err = c.Reply(e.ctx, conv, id, texts[0])
		return err
	})
}

func cmdReact(e *env, args []string) error {
	return onMessage(e, "react", 3, args, func(c *ferry.Client, conv ferry.ConversationID, id [16]byte, rest []string) error {
		return c.React(e.ctx, conv, id, rest[0])
	})
}

func cmdEdit(e *env, args []string) error {
	return onMessage(e, "edit", 3, args, func(c *ferry.Client, conv ferry.ConversationID, id [16]byte, rest []string) error {
		texts, err := e.texts(rest[0], false)
		if err != nil {
			return err
		}
		return c.Edit(e.ctx, conv, id, texts[0])
	})
}

func cmdDelete(e *env, args []string) error {
	return onMessage(e, "delete", 2, args, func(c *ferry.Client, conv ferry.ConversationID, id [16]byte, _ []string) error {
		return c.DeleteForEveryone(e.ctx, conv, id)
	})
}

func cmdTimer(e *env, args []string) error {
	fs := e.flags("timer")
	return e.with(fs, args, -1, func(c *ferry.Client, pos []string) error {
		if len(pos) < 1 || len(pos) > 2 {
			return usageErr("usage: %s", e.synopsis(fs))
		}
		conv, err := conversationNamed(e, c, pos[0])
		if err != nil {
			return err
		}
		if len(pos) == 1 {
			d, err := c.Timer(e.ctx, conv)
			if err != nil {
				return err
			}
			if d == 0 {
				fmt.Fprintln(e.stdout, "off")
			} else {
				fmt.Fprintln(e.stdout, ferry.FormatTimer(d))
			}
			return nil
		}
		var d time.Duration
		if pos[1] != "off" {
			if d, err = time.ParseDuration(pos[1]); err != nil || d <= 0 {
				return usageErr("%q is not a duration (for example 30s, 5m, 1h, 168h) or off", pos[1])
			}
		}
		return c.SetTimer(e.ctx, conv, d)
	})
}

func cmdSettings(e *env, args []string) error {
	fs := e.flags("settings")
	return e.with(fs, args, -1, func(c *ferry.Client, pos []string) error {
		switch {
		case len(pos) == 0:
			on, err := c.TypingIndicators(e.ctx)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "typing\t%s\n", onOff(on))
			return nil
		case len(pos) == 2 && pos[0] == "typing" && (pos[1] == "on" || pos[1] == "off"):
			return c.SetTypingIndicators(e.ctx, pos[1] == "on")
		}
		return usageErr("usage: %s", e.synopsis(fs))
	})
}

func onOff(on bool) string {
	if on {
		return "on"
	}
	return "off"
}
