// Package monitor is Ferry's reachability monitor: it runs trials that do
// what a user does (send a message over one transport of a relay's link and
// get its receipt) beside controls (a neutral reference site reached
// through the same path), classifies every trial by the stage at which it
// failed and OONI's failure string, and turns the trials of each cell
// (vantage, relay, feature, transport) into a state (ok, degraded,
// throttled, intermittent, blocked with its mechanism, unknown) with its
// evidence, confidence and the time it started. A change of state is an
// event with a start and an end.
//
// The package holds the model (Trial, Control, Cell), the classifier, the
// Runner that schedules trials and feeds a Store, and the outputs: OONI
// JSON lines, Prometheus metrics and webhooks. The probes that speak to
// real relays are in monitor/probe, the SQLite history in monitor/history,
// the dashboard and report in monitor/dashboard, and the signed transport
// ranking fed back to clients in monitor/ranking. docs/monitor.md says what
// each state means and how confidence is computed.
//
// It is not a censor detector for the web: it knows Ferry's stages and
// nothing of web pages, block pages or DNS consistency.
package monitor
