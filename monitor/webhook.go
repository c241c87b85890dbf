package monitor

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"time"
)

// WebhookPayload is the JSON body a Webhook posts on every change of
// state.
type WebhookPayload struct {
	// Event is the event that begins; Previous the one that ends (nil for
	// a cell's first event).
	Event    Event  `json:"event"`
	Previous *Event `json:"previous"`
	// Text is one line for people (chat integrations).
	Text string `json:"text"`
}

// Webhook is a Sink that posts a WebhookPayload to URL on every change of
// a cell's state. With Secret set, the request carries
// X-Ferry-Signature: sha256=<hex HMAC-SHA-256 of the body under Secret>.
// A post that fails is retried twice (after 1 and 2 seconds); the trial
// loop of that cell waits for it, at most Timeout per attempt.
type Webhook struct {
	URL    string
	Secret []byte
	// Client sends the requests. If nil, http.DefaultClient is used.
	Client *http.Client
	// Timeout bounds each attempt. Default 10 seconds.
	Timeout time.Duration
	// Logger receives failed posts. If nil, nothing is logged.
	Logger *slog.Logger
}

var _ Sink = (*Webhook)(nil)

// Trial does nothing: only changes are posted.
func (w *Webhook) Trial(context.Context, *Trial, Assessment) {}

// Change posts the change.
func (w *Webhook) Change(ctx context.Context, ended *Event, started Event) {
	p := WebhookPayload{Event: started, Previous: ended, Text: fmt.Sprintf("%s is %s", started.Cell, started.State)}
	if started.Mechanism != MechNone {
		p.Text += " (" + string(started.Mechanism) + ")"
	}
	p.Text += " since " + started.Start.UTC().Format(time.RFC3339) + ": " + started.Evidence
	body, err := json.Marshal(p)
	if err != nil {
		w.logErr(err)
		return
	}
	for attempt := range 3 {
		if attempt > 0 && sleep(ctx, time.Duration(attempt)*time.Second) != nil {
			return
		}
		if err = w.post(ctx, body); err == nil {
			return
		}
	}
	w.logErr(err)
}

func (w *Webhook) post(ctx context.Context, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, orDuration(w.Timeout, 10*time.Second))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if len(w.Secret) > 0 {
		mac := hmac.New(sha256.New, w.Secret)
		mac.Write(body)
		req.Header.Set("X-Ferry-Signature", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	}
	c := w.Client
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		// The URL may hold a token (chat webhooks do): name only its host.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("post webhook to %s: %w", req.URL.Host, err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("post webhook: status %s", resp.Status)
	}
	return nil
}

func (w *Webhook) logErr(err error) {
	if w.Logger != nil {
		w.Logger.Warn("webhook failed", "err", err)
	}
}
