package monitor

import (
	"time"
)

// State is what the monitor concludes about a cell.
type State string

// States. docs/monitor.md says what each means and what evidence leads to
// it.
const (
	// StateUnknown: too few trials, the controls fail too (the network is
	// down), or the trials fail in ways a censor does not cause (the relay
	// is down, the link is wrong, the relay forgot the probe account).
	StateUnknown State = "unknown"
	// StateOK: trials succeed at the control's pace.
	StateOK State = "ok"
	// StateDegraded: trials succeed, but slowly: their runtime is long, or
	// their transfers run well below the control's rate without a plateau.
	StateDegraded State = "degraded"
	// StateThrottled: trials succeed, but their transfers hold a steady
	// rate far below the control's (a plateau).
	StateThrottled State = "throttled"
	// StateIntermittent: some trials succeed and some fail, or the cell
	// came back after a block and has not yet stayed up for the quiet
	// period.
	StateIntermittent State = "intermittent"
	// StateBlocked: trials fail the same way, one after another, while
	// the controls pass; Mechanism says how.
	StateBlocked State = "blocked"
)

// States lists every state, from good to bad.
var States = []State{StateOK, StateDegraded, StateThrottled, StateIntermittent, StateBlocked, StateUnknown}

// Assessment is the current state of one cell, with what supports it.
type Assessment struct {
	Cell
	State     State     `json:"state"`
	Mechanism Mechanism `json:"mechanism"`
	// Since is when the current state began: the first trial that showed
	// it (for a block, the first of the failures that made it one).
	Since time.Time `json:"since"`
	// Detected is when the monitor concluded it (the trial that tipped it).
	Detected time.Time `json:"detected"`
	// Confidence is in [0, 1]: agreement of the trials since Since with the
	// state, times how many of them there are (docs/monitor.md).
	Confidence float64 `json:"confidence"`
	// Evidence says in one sentence what the trials showed.
	Evidence string `json:"evidence"`
	// Trials counts the trials in the window; SuccessRate is the share of
	// them that succeeded, among those that say anything of the network.
	Trials      int     `json:"trials"`
	SuccessRate float64 `json:"success_rate"`
	// Updated is the start of the latest trial.
	Updated time.Time `json:"updated"`
}

// Event is a period during which a cell held one state and mechanism. End
// is zero while the event lasts.
type Event struct {
	Cell
	State      State     `json:"state"`
	Mechanism  Mechanism `json:"mechanism"`
	Start      time.Time `json:"start"`
	End        time.Time `json:"end,omitzero"`
	Detected   time.Time `json:"detected"`
	Confidence float64   `json:"confidence"`
	Evidence   string    `json:"evidence"`
}

// Open reports whether the event still lasts.
func (e *Event) Open() bool { return e.End.IsZero() }

// event returns the event a assessment starts.
func (a *Assessment) event() Event {
	return Event{Cell: a.Cell, State: a.State, Mechanism: a.Mechanism, Start: a.Since, Detected: a.Detected, Confidence: a.Confidence, Evidence: a.Evidence}
}
