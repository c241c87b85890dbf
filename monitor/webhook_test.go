package monitor

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestWebhookSignsAndRetries(t *testing.T) {
	secret := []byte("s3cret")
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mac := hmac.New(sha256.New, secret)
		mac.Write(body)
		if got, want := r.Header.Get("X-Ferry-Signature"), "sha256="+hex.EncodeToString(mac.Sum(nil)); got != want {
			t.Errorf("signature %q, want %q", got, want)
		}
		if !strings.Contains(string(body), `"state":"blocked"`) {
			t.Errorf("body %s", body)
		}
		if calls.Add(1) == 1 {
			http.Error(w, "try later", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	w := &Webhook{URL: srv.URL + "/hook?token=SECRET", Secret: secret, Client: srv.Client()}
	w.Change(context.Background(), nil, Event{Cell: testCell, State: StateBlocked, Mechanism: MechReset, Start: time.Now()})
	if n := calls.Load(); n != 2 {
		t.Fatalf("%d posts, want 2 (one failure, one retry)", n)
	}
}

func TestWebhookErrorHidesURL(t *testing.T) {
	w := &Webhook{URL: "http://127.0.0.1:1/hook?token=SECRET", Timeout: time.Second}
	err := w.post(context.Background(), []byte("{}"))
	if err == nil || strings.Contains(err.Error(), "SECRET") {
		t.Fatalf("error %v: want a failure that does not show the URL's token", err)
	}
}
