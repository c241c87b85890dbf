package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/ferry-im/ferry"
)

const groupUsage = "usage: ferry group create GROUP CONTACT... | add GROUP CONTACT | remove GROUP MEMBER | leave GROUP | rename GROUP NEW | admins GROUP me|MEMBER... | list"

func cmdGroup(e *env, args []string) error {
	fs := e.flags("group")
	pos, err := e.parse(fs, args, -1)
	if err != nil {
		return err
	}
	want := map[string]int{"add": 3, "remove": 3, "leave": 2, "rename": 3, "list": 1}
	many := pos != nil && (pos[0] == "create" || pos[0] == "admins")
	if len(pos) == 0 || (many && len(pos) < 3) || (!many && want[pos[0]] != len(pos)) {
		return usageErr(groupUsage)
	}
	return e.client(func(c *ferry.Client) error {
		switch pos[0] {
		case "list":
			return groupList(e, c)
		case "create":
			return groupCreate(e, c, pos[1], pos[2:])
		}
		conv, err := findGroup(e, c, pos[1])
		if err != nil {
			return err
		}
		switch pos[0] {
		case "add":
			k, err := c.FindContact(e.ctx, pos[2])
			if err != nil {
				return fmt.Errorf("no contact named %q (ferry contacts lists them)", pos[2])
			}
			return c.AddToGroup(e.ctx, conv.ID, k.ID)
		case "remove":
			return c.RemoveFromGroup(e.ctx, conv.ID, pos[2])
		case "leave":
			return c.LeaveGroup(e.ctx, conv.ID)
		case "admins":
			return c.SetGroupAdmins(e.ctx, conv.ID, pos[2:])
		default:
			return c.RenameGroup(e.ctx, conv.ID, pos[2])
		}
	})
}

func groupCreate(e *env, c *ferry.Client, name string, members []string) error {
	var ids []ferry.ContactID
	for _, m := range members {
		k, err := c.FindContact(e.ctx, m)
		if errors.Is(err, ferry.ErrUnknownContact) {
			return fmt.Errorf("no contact named %q (ferry contacts lists them)", m)
		}
		if err != nil {
			return err
		}
		ids = append(ids, k.ID)
	}
	_, err := c.CreateGroup(e.ctx, name, ids)
	return err
}

// findGroup finds the group called name.
func findGroup(e *env, c *ferry.Client, name string) (ferry.Conversation, error) {
	conv, err := findConversation(e, c, name)
	if err != nil {
		return conv, err
	}
	if conv.Kind != ferry.Group {
		return conv, fmt.Errorf("%s is a contact, not a group", name)
	}
	return conv, nil
}

// groupList prints one group per line: name, members, admins, and
// whether the user left or was removed, tab-separated.
func groupList(e *env, c *ferry.Client) error {
	gs, err := c.Groups(e.ctx)
	if err != nil {
		return err
	}
	for _, g := range gs {
		cols := []string{g.Name, fmt.Sprintf("%d members: me, %s", len(g.Members)+1, strings.Join(g.Members, ", ")),
			"admins: " + strings.Join(g.Admins, ", ")}
		if g.Gone != "" {
			cols = append(cols, g.Gone)
		}
		for i := range cols {
			cols[i] = sanitize(cols[i])
		}
		fmt.Fprintln(e.stdout, strings.Join(cols, "\t"))
	}
	return nil
}
