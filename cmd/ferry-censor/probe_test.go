package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ferry-im/ferry/censor/censortest"
)

// serveStockHTTP runs a net/http server with a page of its own.
func serveStockHTTP(t *testing.T, page string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler:  http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, page) }),
		ErrorLog: log.New(io.Discard, "", 0),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return ln.Addr().String()
}

// fastProbe are flags that run a probe's trials at once. The read timeout
// is how long a server has to react before it counts as keeping the
// connection open: generous, since a loaded machine can hold up a test
// server's close for longer than half a second, which would read as
// "open"; only the probes of servers that stay open wait it out.
var fastProbe = []string{"--read-timeout", "2s", "--soon", "1ms", "--concurrency", "32", "--seed", "7"}

func TestProbeCommand(t *testing.T) {
	t.Parallel()
	readLimit := censortest.Serve(t, func(c net.Conn) { io.ReadFull(c, make([]byte, 50)) })
	readsOn := censortest.Serve(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	web := serveStockHTTP(t, "<p>the bakery on the corner</p>")
	otherWeb := serveStockHTTP(t, "<p>timetables of the ferry to the island, and its fares</p>")
	firstFile := filepath.Join(t.TempDir(), "first.bin")
	request := "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"
	if err := os.WriteFile(firstFile, []byte(request), 0o644); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"table", []string{"--first", "474554202f20", readLimit}, 0,
			// A 6-byte first packet has no byte 16 to change; no --later.
			[]string{"server " + readLimit + ": 21 probes", "replay-b0-7,62-63", "row:random-50 50 0 FIN", "row:random-221 221 0 RST", "row:random-49 49 0 open"}},
		{"told-apart", []string{"--first-file", firstFile, "--reference", web, readLimit}, probeExitDiffer,
			[]string{"reference " + web, "differences from the reference " + web, "random-50: ended FIN vs"}},
		{"read-limit", []string{"--read-limit", "100", "--reference", readsOn, readLimit}, probeExitDiffer,
			[]string{"read limit: closes after 50 random bytes", "read limit: still open after 100 random bytes", "read limit: 50 vs -1 bytes"}},
		{"stock-alike", []string{"--first-file", firstFile, "--reference", web, otherWeb}, 0,
			[]string{"no differences: " + otherWeb + " reacts like the reference", `"HTTP/1.1 200 OK`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var out, errb bytes.Buffer
			args := append(append([]string{"probe"}, fastProbe...), tt.args...)
			code := run(t.Context(), args, &out, &errb)
			if code != tt.code {
				t.Fatalf("exit %d, want %d; stderr:\n%s\nstdout:\n%s", code, tt.code, errb.String(), out.String())
			}
			for _, w := range tt.want {
				if row, ok := strings.CutPrefix(w, "row:"); ok {
					if !hasRow(out.String(), strings.Fields(row)) {
						t.Errorf("output lacks a row starting %q:\n%s", row, out.String())
					}
				} else if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
}

// hasRow reports whether a line of out starts with the fields.
func hasRow(out string, fields []string) bool {
	for line := range strings.Lines(out) {
		if f := strings.Fields(line); len(f) >= len(fields) && slices.Equal(f[:len(fields)], fields) {
			return true
		}
	}
	return false
}

func TestProbeCommandUsage(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no address", nil, 2, "usage: ferry-censor probe"},
		{"two addresses", []string{"127.0.0.1:1", "127.0.0.1:2"}, 2, "usage"},
		{"both firsts", []string{"--first", "00", "--first-file", "x", "127.0.0.1:1"}, 2, "usage"},
		{"bad hex", []string{"--first", "zz", "127.0.0.1:1"}, 2, "--first"},
		{"missing file", []string{"--first-file", "/nonexistent/first", "127.0.0.1:1"}, 1, "no such file"},
		{"bad flag", []string{"--nope"}, 2, "flag provided but not defined"},
	}
	for _, tt := range tests {
		var out, errb bytes.Buffer
		code := probeMain(context.Background(), tt.args, &out, &errb)
		if code != tt.code || !strings.Contains(errb.String(), tt.want) {
			t.Errorf("%s: exit %d, stderr %q; want %d and %q", tt.name, code, errb.String(), tt.code, tt.want)
		}
	}
}
