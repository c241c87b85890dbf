package https

import (
	"os"
	"sync"
	"time"
)

// deadline is a settable deadline whose passing closes a channel, so that
// waits can select on it; moving it again makes a fresh channel, so a
// conn stays usable after a timeout.
type deadline struct {
	mu     sync.Mutex // mu protects timer and passed
	timer  *time.Timer
	passed chan struct{} // closed once the deadline has passed
}

func newDeadline() *deadline { return &deadline{passed: make(chan struct{})} }

// set moves the deadline to t; the zero time means none.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.passed // the timer fired: wait for it to close the channel
	}
	d.timer = nil
	select {
	case <-d.passed:
		d.passed = make(chan struct{})
	default:
	}
	if t.IsZero() {
		return
	}
	wait := time.Until(t)
	if wait <= 0 {
		close(d.passed)
		return
	}
	passed := d.passed
	d.timer = time.AfterFunc(wait, func() { close(passed) })
}

// wait returns a channel closed once the deadline has passed.
func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.passed
}

// timeoutError is the error of I/O past its deadline: it wraps
// os.ErrDeadlineExceeded and is a net.Error whose Timeout is true.
type timeoutError struct{ op string }

func (e timeoutError) Error() string   { return e.op + ": " + os.ErrDeadlineExceeded.Error() }
func (e timeoutError) Unwrap() error   { return os.ErrDeadlineExceeded }
func (e timeoutError) Timeout() bool   { return true }
func (e timeoutError) Temporary() bool { return true }
