package censor

import (
	"cmp"
	"fmt"
	"strings"
	"time"
)

// TLSInTLSRule flags TLS flows that carry a handshake of their own inside
// the encrypted stream: a proxy tunnel. It follows Xue et al.,
// "Fingerprinting Obfuscated Proxy Traffic with Encapsulated TLS
// Handshakes", USENIX Security 2024, who showed that the sizes, directions
// and timing of the first records after the outer TLS handshake reveal an
// inner handshake, and that narrow random padding only lowers detection
// (from 0.859 to 0.687). Their classifier is trained on traffic; this one
// is a fixed decision rule over the same features, with parameters set
// from traffic we can generate (docs/censor.md gives its error rates on
// it), and its verdict follows the FET detector's: drop, then block the
// (client IP, server IP, server port) 3-tuple for Residual.
//
// The classifier skips the outer handshake (for TLS 1.3, the server's
// encrypted records before the client's first one and that one, its
// Finished; TLS 1.2 is told by the client's Finished in a handshake
// record), skips server records that come before the client's first
// (session tickets), and groups the application-data records that follow
// into flights: runs of records in one direction. The size of a record is
// its length less the outer cipher's overhead (17 bytes in TLS 1.3, 24 in
// TLS 1.2). A flow carries an inner handshake at flight i when
//
//  1. flight i (client) is one message, one record or several of the
//     sender's full record size and a last one, of HelloMin to HelloMax
//     bytes: an inner ClientHello or Noise first message, written at once;
//  2. flight i+1 (server) has ServerMin to ServerMax bytes: the server's
//     handshake answer;
//  3. the first record of flight i+2 (client) has FinishMin to FinishMax
//     bytes and comes at most Gap after flight i+1's last record: the
//     client's Finished or confirmation, sent at machine speed; and it is
//     not a repeat of flight i (its size within a quarter of flight i's),
//     as a keep-alive client's next small request is.
//
// It looks at flight 1 (a tunnel that starts at once) and at flight 3 when
// flights 1 and 2 are a tunnel's own setup (one client message, and a
// server answer of at most SetupMax bytes: HTTP CONNECT's "200 Connection
// established", a SOCKS reply, a WebSocket upgrade). It decides as soon as
// it can, and passes a flow whose first Records application-data records
// show neither.
type TLSInTLSRule struct {
	Match
	// Records is how many application-data records after the outer
	// handshake the classifier waits for at most; 24 when zero, at most
	// 48.
	Records int `json:"records,omitempty"`
	// HelloMin and HelloMax bound the client's opening message; 32 and
	// 4096 bytes when zero (Noise IK's first message with its length
	// prefix is 98 bytes; TLS ClientHellos are about 200 to 2,100).
	HelloMin int `json:"hello_min,omitempty"`
	HelloMax int `json:"hello_max,omitempty"`
	// ServerMin and ServerMax bound the server's answering flight; 32 and
	// 16384 bytes when zero (Noise IK's 50; a TLS server flight with its
	// certificates 1 to 6 KB).
	ServerMin int `json:"server_min,omitempty"`
	ServerMax int `json:"server_max,omitempty"`
	// FinishMin and FinishMax bound the first record of the client's next
	// flight; 16 and 128 bytes when zero (Ferry's Noise confirmation is
	// 18, a TLS 1.3 Finished with a ChangeCipherSpec 64).
	FinishMin int `json:"finish_min,omitempty"`
	FinishMax int `json:"finish_max,omitempty"`
	// Gap is the longest the client may take to send that record after the
	// server's flight; 2 s when zero.
	Gap Duration `json:"gap,omitempty"`
	// SetupMax bounds the server's answer to a tunnel's setup request for
	// the classifier to look for a handshake after it; 512 bytes when
	// zero.
	SetupMax int `json:"setup_max,omitempty"`
	// Action is Drop (the default) or Reset.
	Action Action `json:"action,omitempty"`
	// Residual is how long the 3-tuple stays blocked; 180 s when zero.
	Residual Duration `json:"residual,omitempty"`
}

// The default parameters of the tls_in_tls rule.
const (
	tlsInTLSRecords    = 24
	tlsInTLSMaxRecords = 48
	tlsInTLSHelloMin   = 32
	tlsInTLSHelloMax   = 4096
	tlsInTLSServerMin  = 32
	tlsInTLSServerMax  = 16384
	tlsInTLSFinishMin  = 16
	tlsInTLSFinishMax  = 128
	tlsInTLSGap        = 2 * time.Second
	tlsInTLSSetupMax   = 512
	tlsInTLSResidual   = 180 * time.Second
	// fullRecordMin is the smallest record length taken for a sender's
	// full record size when a message is cut into several records (Go
	// starts at 1,203 bytes with dynamic record sizing, most stacks use
	// 16 KiB).
	fullRecordMin = 1000
)

// withDefaults returns r with zero fields set to their defaults.
func (r TLSInTLSRule) withDefaults() TLSInTLSRule {
	r.Records = cmp.Or(r.Records, tlsInTLSRecords)
	r.HelloMin = cmp.Or(r.HelloMin, tlsInTLSHelloMin)
	r.HelloMax = cmp.Or(r.HelloMax, tlsInTLSHelloMax)
	r.ServerMin = cmp.Or(r.ServerMin, tlsInTLSServerMin)
	r.ServerMax = cmp.Or(r.ServerMax, tlsInTLSServerMax)
	r.FinishMin = cmp.Or(r.FinishMin, tlsInTLSFinishMin)
	r.FinishMax = cmp.Or(r.FinishMax, tlsInTLSFinishMax)
	r.Gap = Duration(r.Gap.or(tlsInTLSGap))
	r.SetupMax = cmp.Or(r.SetupMax, tlsInTLSSetupMax)
	r.Residual = Duration(r.Residual.or(tlsInTLSResidual))
	return r
}

func (r *TLSInTLSRule) validate() error {
	d := r.withDefaults()
	switch {
	case r.Records < 0 || d.Records > tlsInTLSMaxRecords:
		return fmt.Errorf("records %d is not in [1, %d]", r.Records, tlsInTLSMaxRecords)
	case r.HelloMin < 0 || r.ServerMin < 0 || r.FinishMin < 0 || r.SetupMax < 0:
		return fmt.Errorf("sizes must not be negative")
	case d.HelloMin > d.HelloMax:
		return fmt.Errorf("hello_min %d is above hello_max %d", d.HelloMin, d.HelloMax)
	case d.ServerMin > d.ServerMax:
		return fmt.Errorf("server_min %d is above server_max %d", d.ServerMin, d.ServerMax)
	case d.FinishMin > d.FinishMax:
		return fmt.Errorf("finish_min %d is above finish_max %d", d.FinishMin, d.FinishMax)
	}
	if r.Action != "" {
		if err := r.Action.validIn(Drop, Reset); err != nil {
			return err
		}
	}
	return r.Match.validate()
}

// TLSInTLS runs the tls_in_tls rule's classifier, with its default
// parameters, over the TLS records of one connection (both directions, in
// order, from its first byte: what RecordScanner gives). It returns the
// evidence and true when they show an inner handshake. A transport's tests
// use it to check that its records are not shaped like a tunnel's.
func TLSInTLS(records []TLSRecord) (string, bool) {
	c := TLSInTLSRule{}.withDefaults()
	res := c.classify(records, true)
	return res.evidence, res.flagged
}

// tlsInTLSResult is what the classifier makes of a flow's records.
type tlsInTLSResult struct {
	decided, flagged bool
	evidence         string
}

// flight is a run of application-data records in one direction.
type flight struct {
	dir  Direction
	recs []TLSRecord
}

// size is the flight's bytes inside the outer records.
func (f flight) size(overhead int) int {
	n := 0
	for _, r := range f.recs {
		n += max(r.Len-overhead, 0)
	}
	return n
}

// oneMessage reports whether the flight is one write cut into records:
// every record but the last has the same length, at least fullRecordMin.
func (f flight) oneMessage() bool {
	for _, r := range f.recs[:len(f.recs)-1] {
		if r.Len != f.recs[0].Len || r.Len < fullRecordMin {
			return false
		}
	}
	return true
}

// afterHandshake returns the application-data records that follow the
// outer handshake and the outer cipher's overhead per record, or false
// while the handshake has not ended. TLS 1.2 sends the client's Finished
// in a handshake record after its ChangeCipherSpec, and every
// application-data record comes after it; TLS 1.3 encrypts the handshake
// in application-data records, so the server's come before the client's
// first, which is its Finished.
func afterHandshake(recs []TLSRecord) ([]TLSRecord, int, bool) {
	ccs := false
	for i, r := range recs {
		if r.Dir != Up {
			continue
		}
		switch {
		case ccs && r.Type == recordHandshake: // TLS 1.2
			return appData(recs), 24, true
		case r.Type == recordApplicationData: // TLS 1.3: the client's Finished
			return appData(recs[i+1:]), 17, true
		}
		ccs = ccs || r.Type == recordChangeCipherSpec
	}
	return nil, 0, false
}

// appData returns the application-data records of recs.
func appData(recs []TLSRecord) []TLSRecord {
	var out []TLSRecord
	for _, r := range recs {
		if r.Type == recordApplicationData {
			out = append(out, r)
		}
	}
	return out
}

// flights groups records into flights, skipping server records before the
// client's first.
func flights(recs []TLSRecord) []flight {
	var out []flight
	for _, r := range recs {
		switch {
		case len(out) == 0 && r.Dir == Down:
		case len(out) > 0 && out[len(out)-1].dir == r.Dir:
			out[len(out)-1].recs = append(out[len(out)-1].recs, r)
		default:
			out = append(out, flight{dir: r.Dir, recs: []TLSRecord{r}})
		}
	}
	return out
}

// classify looks for an inner handshake in recs. done says no more
// records will come; then the result is decided.
func (c *TLSInTLSRule) classify(recs []TLSRecord, done bool) tlsInTLSResult {
	post, overhead, ok := afterHandshake(recs)
	if !ok {
		return tlsInTLSResult{decided: done}
	}
	if len(post) > c.Records {
		post, done = post[:c.Records], true
	}
	fl := flights(post)
	pending := false
	for _, at := range []int{0, 2} {
		match, decided, ev := c.handshakeAt(fl, at, overhead)
		if match {
			return tlsInTLSResult{decided: true, flagged: true, evidence: ev}
		}
		pending = pending || !decided
	}
	return tlsInTLSResult{decided: done || !pending}
}

// handshakeAt checks for an inner handshake that starts at flight i
// (0-based). decided is false while more records could make it match.
func (c *TLSInTLSRule) handshakeAt(fl []flight, i, overhead int) (match, decided bool, evidence string) {
	if i > 0 { // flights 0 and 1 must be a tunnel's setup
		if len(fl) < 2 {
			return false, false, ""
		}
		if !fl[0].oneMessage() || len(fl) > 2 && fl[1].size(overhead) > c.SetupMax {
			return false, true, ""
		}
	}
	if len(fl) <= i+1 { // flight i is not known to be complete
		return false, false, ""
	}
	hello := fl[i]
	if n := hello.size(overhead); !hello.oneMessage() || n < c.HelloMin || n > c.HelloMax {
		return false, true, ""
	}
	if len(fl) <= i+2 {
		return false, false, ""
	}
	server := fl[i+1]
	if n := server.size(overhead); n < c.ServerMin || n > c.ServerMax {
		return false, true, ""
	}
	fin := fl[i+2].recs[0]
	gap := fin.At - server.recs[len(server.recs)-1].At
	n, h := fin.Len-overhead, hello.size(overhead)
	if n < c.FinishMin || n > c.FinishMax || gap > time.Duration(c.Gap) || 4*abs(n-h) <= h {
		return false, true, ""
	}
	where := "at the start of the tunnel"
	if i > 0 {
		where = fmt.Sprintf("after a setup exchange of %d and %d bytes", fl[0].size(overhead), fl[1].size(overhead))
	}
	return true, true, fmt.Sprintf("inner handshake %s: client message of %d bytes (%s), server flight of %d bytes (%s), then a %d-byte client record %v later",
		where, hello.size(overhead), recordList(hello), server.size(overhead), recordList(server), fin.Len-overhead, gap.Round(time.Microsecond))
}

func abs(n int) int { return max(n, -n) }

// recordList lists a flight's record lengths.
func recordList(f flight) string {
	var b strings.Builder
	for i, r := range f.recs {
		if i > 0 {
			b.WriteString("+")
		}
		fmt.Fprint(&b, r.Len)
	}
	return "records " + b.String()
}

type tlsInTLSEval struct {
	noAdmit
	rule *TLSInTLSRule
	id   string
}

func (ev *tlsInTLSEval) inspect(_ *Engine, f *Flow, _ time.Time) (Verdict, bool) {
	if f.Kind != KindTLS {
		return Verdict{}, false
	}
	if _, ok := ev.rule.matchFlow(f); !ok {
		return Verdict{}, false
	}
	return Verdict{Action: Pass, watch: []*tlsInTLSEval{ev}}, true
}

// observe classifies the flow's TLS records so far: a block when they show
// an inner handshake, a pass when they cannot any more, and false while
// they might.
func (ev *tlsInTLSEval) observe(e *Engine, f *Flow, now time.Time) (Verdict, bool) {
	c := ev.rule.withDefaults()
	res := c.classify(f.TLS, f.tlsDone)
	if !res.decided {
		return Verdict{}, false
	}
	if !res.flagged {
		return Verdict{Action: Pass}, true
	}
	residual := time.Duration(c.Residual)
	action := cmpAction(c.Action, Drop)
	e.blockTuple(f, ev.id, action, residual, now)
	return Verdict{
		Rule:     ev.id,
		Action:   action,
		Evidence: fmt.Sprintf("%s; 3-tuple blocked for %v", res.evidence, residual),
	}, true
}
