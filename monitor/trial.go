package monitor

import (
	"fmt"
	"math"
	"time"
)

// Stage is the step of a trial at which it failed, in the order a trial
// takes them. OONI's measurements name the same steps (dns, connect, tls,
// http); handshake, auth, deliver, media_put and media_get are Ferry's.
type Stage string

// Stages of a trial.
const (
	StageDNS       Stage = "dns"       // resolving the relay's or the reference site's name
	StageConnect   Stage = "connect"   // opening the TCP connection
	StageTLS       Stage = "tls"       // a transport's TLS handshake (https), or the control's
	StageHTTP      Stage = "http"      // a transport's HTTP exchange (https upgrade), or the control's fetch
	StageHandshake Stage = "handshake" // the transport's own handshake and the channel's Noise handshake: no byte from the relay yet
	StageAuth      Stage = "auth"      // the relay refused the probe account (denied, unknown mailbox)
	StageDeliver   Stage = "deliver"   // after the handshake: sending, delivery to the other probe account, the receipt
	StageMediaPut  Stage = "media_put" // uploading an attachment
	StageMediaGet  Stage = "media_get" // downloading it
	StageLocal     Stage = "local"     // on the monitor's own machine (disk full, unreadable profile): says nothing of the network
)

// Stages lists every stage in trial order.
var Stages = []Stage{StageDNS, StageConnect, StageTLS, StageHTTP, StageHandshake, StageAuth, StageDeliver, StageMediaPut, StageMediaGet, StageLocal}

// Features a cell measures.
const (
	FeatureText = "text" // a text message and its delivery receipt, over the relay protocol
	// FeatureClientText is the same round trip through the whole client
	// library (sessions, outbox, local store).
	FeatureClientText = "client_text"
	// FeatureMediaPut uploads attachments (100 KB, 1 MB, 10 MB by
	// default) and FeatureMediaGet downloads them, over the relay
	// protocol's blob frames.
	FeatureMediaPut = "media_put"
	FeatureMediaGet = "media_get"
)

// Cell is what one series of trials measures: a feature of one relay over
// one transport, from one vantage point.
type Cell struct {
	// Vantage names where the monitor runs ("home-isp", "outside-control").
	Vantage string `json:"vantage"`
	// Relay names the relay: the address of its link's first endpoint
	// unless the operator names it.
	Relay string `json:"relay"`
	// Feature is what a trial does: FeatureText, FeatureClientText,
	// FeatureMediaPut or FeatureMediaGet.
	Feature string `json:"feature"`
	// Transport is the endpoint's transport name ("tcp", "https"), with a
	// "#2" suffix for a second endpoint of the same transport.
	Transport string `json:"transport"`
}

// String returns vantage/relay/feature/transport.
func (c Cell) String() string {
	return c.Vantage + "/" + c.Relay + "/" + c.Feature + "/" + c.Transport
}

// Step is one timed part of a trial, such as "send", "deliver" or
// "receipt".
type Step struct {
	Name     string        `json:"name"`
	Start    time.Duration `json:"start"`    // since the trial's start
	Duration time.Duration `json:"duration"` // how long it took, or until it failed
	Failure  string        `json:"failure,omitempty"`
}

// Transfer is the sustained part of a bulk transfer: Bytes moved in Time,
// measured after the first half of the transfer so that a censor's burst
// allowance does not hide its rate.
type Transfer struct {
	Bytes int64         `json:"bytes"`
	Time  time.Duration `json:"time"`
}

// Rate returns the transfer's rate in bytes per second: 0 when nothing was
// measured, +Inf when the bytes took no measurable time.
func (t Transfer) Rate() float64 {
	switch {
	case t.Bytes <= 0:
		return 0
	case t.Time <= 0:
		return math.Inf(1)
	}
	return float64(t.Bytes) / t.Time.Seconds()
}

// Measured reports whether the transfer holds a measurement.
func (t Transfer) Measured() bool { return t.Bytes > 0 }

// Outcome is how a trial or a control went: when it started, how long it
// took, whether it succeeded, and if not at which stage and how.
type Outcome struct {
	Start   time.Time     `json:"start"`
	Runtime time.Duration `json:"runtime"`
	OK      bool          `json:"ok"`
	// Stage and Failure say where and how it failed: Failure is an OONI
	// failure string (failure.go), empty when OK.
	Stage   Stage  `json:"stage,omitempty"`
	Failure string `json:"failure,omitempty"`
	// Detail is the error text, for people; it never holds keys, tokens or
	// message text.
	Detail string `json:"detail,omitempty"`
	// Transfer is the sustained part of its bulk transfer.
	Transfer Transfer `json:"transfer"`
}

// Fail marks the outcome failed at stage with the OONI failure string of
// err (see Failure), keeping err's text as the detail.
func (o *Outcome) Fail(stage Stage, err error) {
	o.OK, o.Stage, o.Failure, o.Detail = false, stage, Failure(err), ""
	if err != nil {
		o.Detail = err.Error()
	}
}

// FailWith marks the outcome failed at stage with an explicit failure
// string.
func (o *Outcome) FailWith(stage Stage, failure, detail string) {
	o.OK, o.Stage, o.Failure, o.Detail = false, stage, failure, detail
}

// Trial is one probe of a cell: what it did, how far it got, how long each
// step took, and the controls run before and after it.
type Trial struct {
	Cell
	// Endpoint is the endpoint probed, as transport=host:port (never its
	// parameters, which may hold secrets).
	Endpoint string `json:"endpoint"`
	Outcome
	Steps []Step `json:"steps,omitempty"`
	// Pre and Post are the controls run just before and after the probe;
	// nil when the cell has no control.
	Pre  *Control `json:"pre,omitempty"`
	Post *Control `json:"post,omitempty"`
	// Siblings are the latest trials of the relay's other transports from
	// the same vantage, as the Runner knew them when this trial ended:
	// whether the relay could be reached another way at the time. The
	// Runner fills them; they are kept with the trial so that a replay
	// classifies it the same way.
	Siblings []Sibling `json:"siblings,omitempty"`
}

// Sibling is what a trial of another transport to the same relay showed:
// evidence beside the controls that the relay was reachable (OK) while
// this transport failed.
type Sibling struct {
	Transport string    `json:"transport"`
	Feature   string    `json:"feature"`
	Start     time.Time `json:"start"`
	OK        bool      `json:"ok"`
}

// Control is one measurement of the neutral reference site through the
// same path as a trial: whether a browser's TLS handshake with it gets an
// answer, and how fast a page of it downloads.
type Control struct {
	Target string `json:"target"`
	Outcome
}

// controlsTaken reports whether the trial ran a control at all.
func (t *Trial) controlsTaken() bool { return t.Pre != nil || t.Post != nil }

// controlsOK reports whether every control the trial ran passed; a trial
// without controls counts as passed.
func (t *Trial) controlsOK() bool {
	return (t.Pre == nil || t.Pre.OK) && (t.Post == nil || t.Post.OK)
}

// controlFailure says how the trial's first failed control failed
// ("connect connection_refused: dial tcp ..."), or "".
func (t *Trial) controlFailure() string {
	for _, c := range []*Control{t.Pre, t.Post} {
		if c != nil && !c.OK {
			s := string(c.Stage) + " " + c.Failure
			if c.Detail != "" {
				s += " (" + c.Detail + ")"
			}
			return s
		}
	}
	return ""
}

// siblingOK returns the latest sibling that reached the relay, or nil.
func (t *Trial) siblingOK() *Sibling {
	var best *Sibling
	for i := range t.Siblings {
		s := &t.Siblings[i]
		if s.OK && (best == nil || s.Start.After(best.Start)) {
			best = s
		}
	}
	return best
}

// controlRate returns the best rate the trial's controls measured, or 0.
func (t *Trial) controlRate() float64 {
	r := 0.0
	for _, c := range []*Control{t.Pre, t.Post} {
		if c != nil && c.OK && c.Transfer.Measured() {
			r = math.Max(r, c.Transfer.Rate())
		}
	}
	return r
}

// Summary returns one line saying how the trial went.
func (t *Trial) Summary() string {
	if t.OK {
		s := fmt.Sprintf("ok in %v", t.Runtime.Round(time.Millisecond))
		if r := t.Transfer.Rate(); r > 0 && !math.IsInf(r, 1) {
			s += fmt.Sprintf(", %s", FormatRate(r))
		}
		return s
	}
	return fmt.Sprintf("failed at %s: %s", t.Stage, t.Failure)
}

// FormatRate formats a rate in bytes per second as kbit/s or Mbit/s.
func FormatRate(r float64) string {
	switch {
	case math.IsInf(r, 1):
		return "unbounded"
	case r*8 >= 1e6:
		return fmt.Sprintf("%.1f Mbit/s", r*8/1e6)
	}
	return fmt.Sprintf("%.0f kbit/s", r*8/1e3)
}
