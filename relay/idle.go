package relay

import (
	"time"
)

// The idle timeout (and the frame timeout) is enforced by one reaper
// goroutine per server rather than a timer per connection: every frame stores when it came
// (conn.lastFrame), and the reaper, waking every quarter of
// Limits.IdleTimeout, ends the reads of the connections that have been
// silent for longer. A silent connection is therefore closed between one
// and one and a quarter timeouts after its last frame. Like the timeout
// itself, the reaper runs on the real clock, not Config.Now.

// since is the time elapsed since the server started, on the monotonic
// clock, as stored in conn.lastFrame.
func (s *Server) since() int64 { return int64(time.Since(s.started)) }

// reapIdle ends idle connections until Close: those silent for
// IdleTimeout, and those with a frame in transit for FrameTimeout (a
// stalled frame holds memory while pings keep the connection busy). It
// wakes every quarter of the shorter of the two.
func (s *Server) reapIdle() {
	defer close(s.reaperDone)
	timeout, frameTimeout := s.limits.IdleTimeout, s.limits.FrameTimeout
	tick := min(positive(timeout), positive(frameTimeout))
	if tick == positive(0) {
		<-s.workCtx.Done()
		return
	}
	t := time.NewTicker(max(tick/4, time.Millisecond))
	defer t.Stop()
	var open []*conn
	for {
		select {
		case <-s.workCtx.Done():
			return
		case <-t.C:
		}
		open = s.openConns(open[:0])
		now := s.since()
		for _, c := range open {
			if timeout > 0 && time.Duration(now-c.lastFrame.Load()) >= timeout {
				c.idle.Store(true)
				c.cancelRead()
			}
			if since := c.ch.InTransitSince(); frameTimeout > 0 && !since.IsZero() && time.Since(since) >= frameTimeout {
				c.stalled.Store(true)
				c.cancelRead()
			}
		}
		clear(open)
	}
}

// positive is d, or a duration longer than any timeout if d is not
// positive (disabled).
func positive(d time.Duration) time.Duration {
	if d <= 0 {
		return 1 << 62
	}
	return d
}

// openConns appends the tracked connections to dst.
func (s *Server) openConns(dst []*conn) []*conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.open {
		dst = append(dst, c)
	}
	return dst
}
