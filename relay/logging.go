package relay

import (
	"context"
	"log/slog"
	"regexp"
	"sync"
	"time"
)

// The relay's logs pass through logHandler, which does two things to
// whatever handler Config.Logger has:
//
//   - It rate-limits each message (by level and text, not attributes): a
//     burst of logRateBurst, then logRatePerSec lines a second. The next
//     line let through says how many were dropped ("suppressed"). A relay
//     whose disk is full, or under a flood of bad handshakes, writes a few
//     lines a second, not thousands.
//   - It removes network addresses from messages and attribute values
//     (error texts from package net carry both ends of a connection):
//     the relay logs connection numbers, never who connected.
const (
	logRateBurst  = 20
	logRatePerSec = 1.0
)

type logHandler struct {
	h     slog.Handler
	state *logState // shared by the handlers WithAttrs and WithGroup make
}

type logState struct {
	now func() time.Time

	// mu protects buckets.
	mu      sync.Mutex
	buckets map[logKey]*logBucket
}

type logKey struct {
	level slog.Level
	msg   string
}

type logBucket struct {
	tokens     float64
	last       time.Time
	suppressed int
}

func newLogHandler(h slog.Handler, now func() time.Time) *logHandler {
	return &logHandler{h: h, state: &logState{now: now, buckets: make(map[logKey]*logBucket)}}
}

func (h *logHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.h.Enabled(ctx, l) }

func (h *logHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	for i := range attrs {
		attrs[i] = redactAttr(attrs[i])
	}
	return &logHandler{h: h.h.WithAttrs(attrs), state: h.state}
}

func (h *logHandler) WithGroup(name string) slog.Handler {
	return &logHandler{h: h.h.WithGroup(name), state: h.state}
}

func (h *logHandler) Handle(ctx context.Context, r slog.Record) error {
	suppressed, ok := h.state.allow(logKey{r.Level, r.Message})
	if !ok {
		return nil
	}
	out := slog.NewRecord(r.Time, r.Level, redact(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(redactAttr(a))
		return true
	})
	if suppressed > 0 {
		out.AddAttrs(slog.Int("suppressed", suppressed))
	}
	return h.h.Handle(ctx, out)
}

// allow takes a token for key and reports whether the line may be
// written and how many lines of key were dropped since the last one.
func (s *logState) allow(key logKey) (suppressed int, ok bool) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.buckets[key]
	if b == nil {
		b = &logBucket{tokens: logRateBurst, last: now}
		s.buckets[key] = b
	}
	if elapsed := now.Sub(b.last).Seconds(); elapsed > 0 {
		b.tokens = min(logRateBurst, b.tokens+elapsed*logRatePerSec)
		b.last = now
	}
	if b.tokens < 1 {
		b.suppressed++
		return 0, false
	}
	b.tokens--
	suppressed, b.suppressed = b.suppressed, 0
	return suppressed, true
}

// addrPattern matches IPv4 addresses and bracketed or bare IPv6
// addresses, with an optional port.
var addrPattern = regexp.MustCompile(`\[[0-9A-Fa-f:.%a-z0-9]*:[0-9A-Fa-f:.%a-z0-9]*\](:\d+)?|\b\d{1,3}(\.\d{1,3}){3}(:\d+)?\b|\b[0-9A-Fa-f]{0,4}(:[0-9A-Fa-f]{0,4}){2,7}\b`)

// redact replaces network addresses in s with "[addr]".
func redact(s string) string {
	if !addrLike(s) {
		return s
	}
	return addrPattern.ReplaceAllString(s, "[addr]")
}

// addrLike is a cheap test that s may hold an address (a dot or colon
// next to a digit), so most lines skip the regular expression.
func addrLike(s string) bool {
	for i := 1; i < len(s); i++ {
		if (s[i] == '.' || s[i] == ':') && (isDigit(s[i-1]) || i+1 < len(s) && isDigit(s[i+1])) {
			return true
		}
	}
	return false
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// redactAttr redacts a string or error attribute value (groups too).
func redactAttr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, redact(v.String()))
	case slog.KindAny:
		if err, ok := v.Any().(error); ok {
			return slog.String(a.Key, redact(err.Error()))
		}
	case slog.KindGroup:
		attrs := v.Group()
		out := make([]any, len(attrs))
		for i := range attrs {
			out[i] = redactAttr(attrs[i])
		}
		return slog.Group(a.Key, out...)
	}
	return a
}
