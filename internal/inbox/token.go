package inbox

import (
	"bytes"
	"io"

	"github.com/ferry-im/ferry/internal/content"
	"github.com/ferry-im/ferry/internal/localstore"
)

// Delivery tokens per contact (docs/protocol.md sections 6.2 and 8.6): an
// invite carries a token made for it; once the invitee is a contact, the
// inviter makes it a token of its own, registers it with the relay,
// sends it in a token content and, when the content's delivery receipt
// comes, revokes the invite's token. Registering and revoking at the
// relay is prekeys.Policy.Upload's, after the batch.

// rotateInviteToken hands the invite's token (found by the invite's
// secret) to the new contact k, makes k a token of its own, and marks it
// to be sent once the relay has it. The caller writes k.
func (b *batch) rotateInviteToken(k *localstore.Contact, secret [16]byte) error {
	prof, err := b.ownTokens()
	if err != nil {
		return err
	}
	for i, t := range prof.Tokens {
		if bytes.Equal(t.Invite, secret[:]) {
			prof.Tokens[i].Invite, prof.Tokens[i].Expires, prof.Tokens[i].Contact = nil, 0, k.ID
		}
	}
	tok := make([]byte, 32)
	if _, err := io.ReadFull(b.in.a.Rand, tok); err != nil {
		return err
	}
	prof.Tokens = append(prof.Tokens, localstore.OwnToken{Token: tok, Contact: k.ID, Grant: true})
	k.MyToken = tok
	b.res.needUpload = true
	return nil
}

// ownTokens returns the profile, loaded once per batch and written at its
// end, for changing its tokens.
func (b *batch) ownTokens() (*localstore.Profile, error) {
	if _, err := b.loadPrekeys(); err != nil {
		return nil, err
	}
	b.prekeys.tokens = true
	return b.prekeys.prof, nil
}

// handleToken takes a token content: p's contact gives the user a
// delivery token of its own, which the user sends with from now on. It is
// acknowledged with a delivery receipt, which lets the contact revoke the
// token the user had (the invite's).
func (b *batch) handleToken(p *peer, c *content.Content) error {
	if p.group {
		return nil
	}
	t := c.Body.(*content.Token)
	p.k.Token = t.Token[:]
	p.delivered = append(p.delivered, c.ID)
	b.in.a.Log.Info("a contact gave us a delivery token of its own")
	return nil
}

// grantDelivered revokes the tokens of p's contact other than its own
// (the invite's) once the token content that gave it its own arrived.
func (b *batch) grantDelivered(p *peer, ids [][16]byte) error {
	if p.k.Grant == ([16]byte{}) {
		return nil
	}
	found := false
	for _, id := range ids {
		found = found || id == p.k.Grant
	}
	if !found {
		return nil
	}
	p.k.Grant = [16]byte{}
	prof, err := b.ownTokens()
	if err != nil {
		return err
	}
	for i, t := range prof.Tokens {
		if t.Contact == p.k.ID && !bytes.Equal(t.Token, p.k.MyToken) {
			prof.Tokens[i].Revoked = true
		}
	}
	b.res.needUpload = true
	return nil
}
