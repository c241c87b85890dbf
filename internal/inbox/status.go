package inbox

import (
	"time"

	"github.com/ferry-im/ferry/internal/relayclient"
	"github.com/ferry-im/ferry/link"
)

// Status is the state of the connection to the user's relay, told when
// it changes.
type Status struct {
	// Online is set while connected; Endpoint is then the endpoint used.
	Online   bool
	Endpoint link.Endpoint
	// Err says why the relay could not be reached (it wraps
	// relayclient.ErrUnreachable; a *relayclient.DialError names the
	// cause); Retry is when the next attempt starts (zero: no retry);
	// Failures counts the failed connections in a row.
	Err      error
	Retry    time.Time
	Failures int
	// Trying lists the endpoints the next attempt tries, in order; Ranked
	// is set when the order is the relay's transport ranking (what a
	// monitor measured on this network).
	Trying []link.Endpoint
	Ranked bool
}

func (in *Inbox) tellUp(ev Events, cn *relayclient.Conn) {
	if ev.Status != nil {
		ev.Status(Status{Online: true, Endpoint: cn.Endpoint()})
	}
}

func (in *Inbox) tellDown(ev Events, err error, wait time.Duration, failures int) {
	if ev.Status == nil {
		return
	}
	st := Status{Err: err, Failures: failures}
	if wait > 0 {
		st.Retry = time.Now().Add(wait)
	}
	st.Trying, st.Ranked, _ = in.a.Dialer.Endpoints(in.a.Relay)
	ev.Status(st)
}
