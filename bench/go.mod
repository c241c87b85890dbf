module github.com/ferry-im/ferry/bench

go 1.26.0

replace github.com/ferry-im/ferry => ../

require (
	github.com/ferry-im/ferry v0.0.0-00010101000000-000000000000
	gitlab.com/yawning/obfs4.git v0.0.0-20231012084234-c3e2d44b1033
	gitlab.torproject.org/tpo/anti-censorship/pluggable-transports/goptlib v1.5.0
)

require (
	filippo.io/edwards25519 v1.1.0 // indirect
	github.com/andybalholm/brotli v1.0.6 // indirect
	github.com/dchest/siphash v1.2.3 // indirect
	github.com/klauspost/compress v1.20.1 // indirect
	github.com/refraction-networking/utls v1.8.2 // indirect
	gitlab.com/yawning/edwards25519-extra v0.0.0-20231005122941-2149dcafc266 // indirect
	golang.org/x/crypto v0.58.0 // indirect
	golang.org/x/net v0.60.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
	golang.org/x/text v0.43.0 // indirect
)
