package relay_test

import (
	"crypto/sha256"
	"testing"
	"time"

	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/relay/blobtest"
	"github.com/ferry-im/ferry/relay/memstore"
	"github.com/ferry-im/ferry/wire"
)

// newBlobEnv is a relay with an in-memory blob store and small blob limits.
func newBlobEnv(t *testing.T, edit func(*relay.Config)) (*env, *memstore.Blobs) {
	blobs := memstore.NewBlobs()
	e := newEnv(t, func(c *relay.Config) {
		c.Blobs = blobs
		c.Limits.BlobMaxSize = 1 << 20
		c.Limits.BlobQuotaBytes = 1<<20 + 100
		if edit != nil {
			edit(c)
		}
	})
	return e, blobs
}

func blobKey(n byte) [32]byte { return sha256.Sum256([]byte{'k', n}) }

func (c *client) blobState(m wire.Message) wire.BlobState {
	c.t.Helper()
	c.send(m)
	return expect[wire.BlobState](c)
}

func (c *client) blobError(m wire.Message, code wire.Code) {
	c.t.Helper()
	c.send(m)
	if e := expect[wire.Error](c); e.Code != code {
		c.t.Fatalf("answer to %v: got %v (%s), want %v", m.Type(), e.Code, e.Msg, code)
	}
}

// TestBlobUploadDownload uploads a blob in pieces, resumes it from a new
// connection with a status query and an overlapping piece, completes it
// (the relay's digest matches), and reads ranges of it back.
func TestBlobUploadDownload(t *testing.T) {
	e, _ := newBlobEnv(t, nil)
	owner := e.dial(mustKey(t), nil)
	owner.register(token(1))
	up := e.dial(mustKey(t), nil)
	data := blobtest.Data(300000, 1)
	create := wire.BlobCreate{ReqID: 1, Key: blobKey(1), Mailbox: owner.mailbox, Token: token(1), Size: uint64(len(data))}
	if st := up.blobState(create); st.Size != uint64(len(data)) || st.Stored != 0 || st.Complete {
		t.Fatalf("created: %+v", st)
	}
	for off := 0; off < 100000; off += 50000 {
		st := up.blobState(wire.BlobPut{ReqID: 2, Key: blobKey(1), Offset: uint64(off), Data: data[off : off+50000]})
		if st.ReqID != 2 || st.Stored != uint64(off+50000) {
			t.Fatalf("after piece at %d: %+v", off, st)
		}
	}
	// A piece beyond the bytes stored is not written; the answer says
	// where to go on.
	if st := up.blobState(wire.BlobPut{ReqID: 3, Key: blobKey(1), Offset: 150000, Data: data[150000:160000]}); st.Stored != 100000 {
		t.Fatalf("piece beyond the end: %+v, want stored 100000", st)
	}
	// A resumed upload on another connection: the status, then a piece
	// overlapping what is stored.
	up2 := e.dial(mustKey(t), nil)
	if st := up2.blobState(wire.BlobStatus{ReqID: 4, Key: blobKey(1)}); st.Stored != 100000 {
		t.Fatalf("status: %+v", st)
	}
	if st := up2.blobState(create); st.Stored != 100000 {
		t.Fatalf("create again: %+v", st)
	}
	st := up2.blobState(wire.BlobPut{ReqID: 5, Key: blobKey(1), Offset: 90000, Data: data[90000:]})
	if !st.Complete || st.Digest != sha256.Sum256(data) {
		t.Fatalf("last piece: %+v, want complete with the data's digest", st)
	}
	if got := e.metric("ferry_relay_blob_put_bytes_total", "duplicate"); got != 10000 {
		t.Errorf("duplicate bytes %v, want 10000", got)
	}
	if got := e.metric("ferry_relay_blob_put_bytes_total", "stored"); got != float64(len(data)) {
		t.Errorf("stored bytes %v, want %d", got, len(data))
	}
	// Anyone with the id reads it, in ranges.
	reader := e.dial(mustKey(t), nil)
	bid := wire.BlobID(blobKey(1))
	for _, r := range []struct{ off, n, want int }{{0, 48, 48}, {48, 65552, 65552}, {299990, 100, 10}} {
		reader.send(wire.BlobGet{ReqID: 6, ID: bid, Offset: uint64(r.off), Length: uint32(r.n)})
		d := expect[wire.BlobData](reader)
		if d.ReqID != 6 || d.Offset != uint64(r.off) || string(d.Data) != string(data[r.off:r.off+r.want]) {
			t.Fatalf("BlobGet(%d, %d): got %d bytes at %d", r.off, r.n, len(d.Data), d.Offset)
		}
	}
	reader.blobError(wire.BlobGet{ReqID: 7, ID: bid, Offset: 300001, Length: 1}, wire.CodeBadRequest)
	reader.blobError(wire.BlobGet{ReqID: 8, ID: wire.BlobID(blobKey(9)), Length: 1}, wire.CodeNotFound)
}

// TestBlobRefusals: a blob is created only with the mailbox's token,
// within the size limit and the mailbox's quota; an incomplete blob
// cannot be read; pieces need the key.
func TestBlobRefusals(t *testing.T) {
	e, _ := newBlobEnv(t, nil)
	owner := e.dial(mustKey(t), nil)
	owner.register(token(1))
	c := e.dial(mustKey(t), nil)
	mk := func(key byte, tok [32]byte, size uint64) wire.BlobCreate {
		return wire.BlobCreate{ReqID: 1, Key: blobKey(key), Mailbox: owner.mailbox, Token: tok, Size: size}
	}
	c.blobError(mk(1, token(2), 10), wire.CodeDenied)
	c.blobError(mk(1, token(1), 1<<20+1), wire.CodeTooLarge)
	c.blobState(mk(1, token(1), 1<<20))
	c.blobError(mk(2, token(1), 101), wire.CodeQuota)
	c.blobState(mk(2, token(1), 100))
	c.blobError(mk(2, token(1), 99), wire.CodeBadRequest)
	c.blobError(wire.BlobGet{ReqID: 2, ID: wire.BlobID(blobKey(1)), Length: 10}, wire.CodeUnavailable) // not finished
	c.blobError(wire.BlobPut{ReqID: 3, Key: blobKey(3), Data: []byte("x")}, wire.CodeNotFound)
	c.blobError(wire.BlobPut{ReqID: 4, Key: blobKey(2), Data: make([]byte, 101)}, wire.CodeBadRequest)
	c.blobError(wire.BlobStatus{ReqID: 5, Key: blobKey(3)}, wire.CodeNotFound)
	// Reset empties a blob its writer found corrupt.
	c.blobState(wire.BlobPut{ReqID: 6, Key: blobKey(2), Data: make([]byte, 50)})
	reset := mk(2, token(1), 100)
	reset.Flags = wire.BlobReset
	if st := c.blobState(reset); st.Stored != 0 {
		t.Fatalf("after reset: %+v", st)
	}
}

func TestNoBlobStore(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial(mustKey(t), nil)
	c.blobError(wire.BlobStatus{ReqID: 1, Key: blobKey(1)}, wire.CodeUnavailable)
	c.blobError(wire.BlobGet{ReqID: 2, Length: 1}, wire.CodeUnavailable)
}

// TestBlobTTL: the sweep deletes blobs past their TTL and incomplete ones
// left idle.
func TestBlobTTL(t *testing.T) {
	e, blobs := newBlobEnv(t, func(c *relay.Config) {
		c.Limits.BlobTTL = 10 * 24 * time.Hour
		c.Limits.BlobIdleTTL = 24 * time.Hour
	})
	owner := e.dial(mustKey(t), nil)
	owner.register(token(1))
	c := e.dial(mustKey(t), nil)
	for k := byte(1); k <= 2; k++ {
		c.blobState(wire.BlobCreate{ReqID: 1, Key: blobKey(k), Mailbox: owner.mailbox, Token: token(1), Size: 4})
	}
	c.blobState(wire.BlobPut{ReqID: 2, Key: blobKey(1), Data: []byte("full")})
	e.clock.Advance(25 * time.Hour)
	e.srv.Sweep(t.Context())
	if _, err := blobs.Info(t.Context(), wire.BlobID(blobKey(2))); err == nil {
		t.Error("the idle incomplete blob is still there")
	}
	if _, err := blobs.Info(t.Context(), wire.BlobID(blobKey(1))); err != nil {
		t.Errorf("the complete blob: %v", err)
	}
	e.clock.Advance(10 * 24 * time.Hour)
	e.srv.Sweep(t.Context())
	if _, err := blobs.Info(t.Context(), wire.BlobID(blobKey(1))); err == nil {
		t.Error("the blob past its TTL is still there")
	}
	if got := e.metric("ferry_relay_blobs_expired_total", ""); got != 2 {
		t.Errorf("expired %v, want 2", got)
	}
}

// TestFanout stores one envelope in several mailboxes, pushes it to a
// subscriber, refuses the recipient whose token is wrong, and is
// idempotent per recipient.
func TestFanout(t *testing.T) {
	e := newEnv(t, nil)
	var members []*client
	for i := range 3 {
		m := e.dial(mustKey(t), nil)
		m.register(token(byte(i)))
		members = append(members, m)
	}
	members[0].subscribe()
	sender := e.dial(mustKey(t), nil)
	f := wire.Fanout{ID: id(1), Envelope: []byte("group envelope"), Recipients: []wire.Recipient{
		{Mailbox: members[0].mailbox, Token: token(0)},
		{Mailbox: members[1].mailbox, Token: token(9)},
		{Mailbox: members[2].mailbox, Token: token(2)},
	}}
	sender.send(f)
	res := expect[wire.FanoutResult](sender)
	if res.ID != id(1) || !equal(res.Failures, []wire.FanoutFailure{{Index: 1, Code: wire.CodeDenied}}) {
		t.Fatalf("result %+v, want recipient 1 denied", res)
	}
	if d := expect[wire.Deliver](members[0]); string(d.Envelope) != "group envelope" || d.ID != id(1) {
		t.Fatalf("pushed %+v", d)
	}
	if got := members[2].subscribe(); len(got) != 1 || string(got[0].Envelope) != "group envelope" {
		t.Fatalf("member 2's mailbox: %+v", got)
	}
	sender.send(f)
	expect[wire.FanoutResult](sender)
	members[0].quiet() // a retry is not pushed again
	if got := e.metric("ferry_relay_fanout_recipients_total", "duplicate"); got != 2 {
		t.Errorf("duplicates %v, want 2", got)
	}
}
