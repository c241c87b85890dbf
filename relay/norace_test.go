//go:build !race

package relay_test

// raceEnabled reports a -race build, whose instrumentation makes stacks
// larger.
const raceEnabled = false
