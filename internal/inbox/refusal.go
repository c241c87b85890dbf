package inbox

import (
	"fmt"

	"github.com/ferry-im/ferry/internal/content"
	"github.com/ferry-im/ferry/internal/localstore"
)

// handleRefusal takes the inviter's refusal of the user's introduction:
// the contact becomes Refused, what was sent to it failed, what waits for
// it is dropped, and a notice tells the user to ask for a new invite. A
// refusal of anything else is ignored.
func (b *batch) handleRefusal(p *peer, c *content.Content) error {
	r := c.Body.(*content.Refusal)
	if p.k.Status != localstore.Pending || r.Introduction != p.k.Introduction {
		b.in.a.Log.Info("ignored a refusal of no pending introduction")
		return nil
	}
	p.k.Status = localstore.Refused
	b.res.contacts = append(b.res.contacts, p.k)
	if err := b.tx.DropOutbox(p.k.ID); err != nil {
		return err
	}
	ms, err := b.tx.Messages(localstore.MessageQuery{Conversation: p.conv.ID})
	if err != nil {
		return err
	}
	for _, m := range ms {
		if m.Outgoing() && m.State < localstore.Delivered {
			if _, err := b.tx.AdvanceState(m.ID, p.conv.ID, true, localstore.Failed); err != nil {
				return err
			}
			b.res.stateMoved = true
		}
	}
	why := map[byte]string{
		content.RefusedUsed:    "someone else had already used the invite",
		content.RefusedUnknown: "it never made that invite (the link was changed)",
		content.RefusedExpired: "the invite had expired",
	}[r.Reason]
	return b.notice(p.conv.ID, p.k, NoticeRefused, fmt.Sprintf(
		"%s's Ferry did not accept you as a contact: %s. Nothing you send will reach %s; ask %s for a new invite, then remove this contact.",
		p.k.Name, why, p.k.Name, p.k.Name))
}
