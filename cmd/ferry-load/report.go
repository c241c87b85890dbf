package main

import (
	"encoding/json"
	"fmt"
	"io"
	"syscall"
	"time"

	"github.com/ferry-im/ferry/internal/load"
)

// jsonReport is what --json prints.
type jsonReport struct {
	MsgsPerS    float64 `json:"msgs_per_s"`
	P50ms       float64 `json:"p50_ms"`
	P99ms       float64 `json:"p99_ms"`
	P999ms      float64 `json:"p999_ms"`
	Errors      int     `json:"errors"` // refused Sends, failed dials, broken connections, messages lost or stored twice
	RelayRSS    float64 `json:"relay_rss_bytes"`
	RelayCPU    float64 `json:"relay_cpu_s"`
	RelayConns  float64 `json:"relay_conns"` // the most connections the relays served at once
	Conns       int     `json:"conns"`       // connections set up and subscribed
	Procs       int     `json:"procs"`
	Messages    int     `json:"messages"`
	Rate        float64 `json:"rate"`
	Sent        int     `json:"sent"`
	Received    int     `json:"received"`
	Lost        int     `json:"lost"`
	Duplicates  int     `json:"duplicates"`
	StoredTwice int     `json:"stored_twice"`
	Refused     int     `json:"refused"`
	Reconnects  int     `json:"reconnects"`
	ConnectS    float64 `json:"connect_s"`
	SendS       float64 `json:"send_s"`
	TotalS      float64 `json:"total_s"`
	MetricsErr  string  `json:"metrics_error,omitempty"`
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

func report(w io.Writer, o *options, res load.Result, relays relayStats, total time.Duration) error {
	lost := max(res.Expected-res.Received, 0)
	r := jsonReport{
		MsgsPerS: res.Throughput(), P50ms: ms(res.Latency.Quantile(0.5)), P99ms: ms(res.Latency.Quantile(0.99)),
		P999ms:   ms(res.Latency.Quantile(0.999)),
		Errors:   res.Refused + res.Errors + lost + res.StoredTwice,
		RelayRSS: relays.RSS, RelayCPU: relays.CPU, RelayConns: relays.Conns,
		Conns: res.Users, Procs: o.procs, Messages: o.messages, Rate: o.rate,
		Sent: res.Sent, Received: res.Received, Lost: lost, Duplicates: res.Duplicates, StoredTwice: res.StoredTwice,
		Refused: res.Refused, Reconnects: res.Reconnects,
		ConnectS: res.ConnectTime.Seconds(), SendS: max(res.Last.Sub(res.First).Seconds(), 0), TotalS: total.Seconds(),
	}
	if relays.Err != nil {
		r.MetricsErr = relays.Err.Error()
	}
	if o.json {
		return json.NewEncoder(w).Encode(r)
	}
	fmt.Fprintf(w, "connections  %d subscribed in %.1fs over %d processes\n", r.Conns, r.ConnectS, r.Procs)
	if o.messages > 0 {
		fmt.Fprintf(w, "messages     %d sent, %d of %d received (%d lost, %d pushed again, %d stored twice, %d refused)\n",
			r.Sent, r.Received, res.Expected, r.Lost, r.Duplicates, r.StoredTwice, r.Refused)
		fmt.Fprintf(w, "throughput   %.0f msgs/s over %.1fs\n", r.MsgsPerS, r.SendS)
		fmt.Fprintf(w, "latency      p50 %.2fms  p99 %.2fms  p999 %.2fms\n", r.P50ms, r.P99ms, r.P999ms)
	}
	fmt.Fprintf(w, "errors       %d (%d reconnects)\n", r.Errors, r.Reconnects)
	if relays.measured {
		fmt.Fprintf(w, "relays       %.0f MB RSS at most, %.0f connections at most, %.1f CPU-s\n", r.RelayRSS/1e6, r.RelayConns, r.RelayCPU)
	}
	if relays.Err != nil {
		fmt.Fprintf(w, "metrics      %v\n", relays.Err)
	}
	return nil
}

// raiseFileLimit lifts the soft open-file limit to the hard one: every
// connection is a file.
func raiseFileLimit() {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
}
