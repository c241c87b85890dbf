package relay

import (
	"bytes"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"
)

func TestLogRateLimited(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	now := time.Unix(1000, 0)
	log := slog.New(newLogHandler(slog.NewTextHandler(&buf, nil), func() time.Time { return now }))
	for range 10_000 {
		log.Error("store envelope", "err", errors.New("disk full"))
	}
	log.Info("another message")
	if got := strings.Count(buf.String(), "store envelope"); got != logRateBurst {
		t.Fatalf("%d lines of 10,000 identical errors, want the burst of %d", got, logRateBurst)
	}
	if !strings.Contains(buf.String(), "another message") {
		t.Fatal("a different message was suppressed with the flood")
	}
	now = now.Add(2 * time.Second)
	buf.Reset()
	log.Error("store envelope", "err", errors.New("disk full"))
	if want := "suppressed=9980"; !strings.Contains(buf.String(), want) {
		t.Fatalf("line after the flood = %q, want it to say %s", buf.String(), want)
	}
}

func TestLogsCarryNoAddresses(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := slog.New(newLogHandler(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}), time.Now))
	opErr := &net.OpError{Op: "read", Net: "tcp",
		Source: &net.TCPAddr{IP: net.ParseIP("192.0.2.10"), Port: 7443},
		Addr:   &net.TCPAddr{IP: net.ParseIP("2001:db8::17"), Port: 51234}, Err: errors.New("connection reset by peer")}
	log.With("peer", "198.51.100.3:443").Debug("connection closed", "err", opErr, slog.Group("g", "a", "203.0.113.9"))
	out := buf.String()
	for _, addr := range []string{"192.0.2.10", "2001:db8::17", "198.51.100.3", "203.0.113.9", "51234"} {
		if strings.Contains(out, addr) {
			t.Errorf("log line carries %s: %s", addr, out)
		}
	}
	if !strings.Contains(out, "connection reset by peer") || !strings.Contains(out, "conn") {
		t.Errorf("redaction removed more than addresses: %s", out)
	}
}
