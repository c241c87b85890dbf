// Package scenario is the censor scenario matrix: end-to-end tests that
// build ferry-relay, ferry and ferry-censor, run a relay that listens on
// every transport it has behind ferry-censor with one shipped policy per
// test, and check what two ferry clients get through: messages each way
// exactly once and in order, the transport they ended on, and a control
// showing the censor stopping the transport the policy targets
// (docs/censor.md, "The scenario matrix").
//
// It has no code outside its tests, and nothing imports it.
package scenario
