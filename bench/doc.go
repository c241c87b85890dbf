// Package bench holds benchmarks that compare Ferry's transports with
// other projects' side by side. It is a module of its own so that what it
// compares against (obfs4) never becomes a dependency of Ferry.
// docs/benchmarks.md records the figures and the commands.
package bench
