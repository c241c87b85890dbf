// Package servicetest gives tests the services a relay cluster runs on:
// PostgreSQL and NATS. Tests share the ones the machine runs (named by
// FERRY_POSTGRES_URL and FERRY_NATS_URL, with the defaults below), each in
// a schema or subject prefix of its own, so that test packages running in
// parallel do not collide.
//
// A test that needs a service fails, with a message saying how to start
// it, when the service cannot be reached: it never skips. .ci/run starts
// both services before the tests.
//
// It is test support; production code never imports it.
package servicetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Defaults when the environment names no service.
const (
	DefaultPostgresURL = "postgres://postgres@127.0.0.1:5432/test"
	DefaultNATSURL     = "nats://127.0.0.1:4222"
)

// PostgresAdminURL is the shared database's URL, from FERRY_POSTGRES_URL.
func PostgresAdminURL() string {
	if u := os.Getenv("FERRY_POSTGRES_URL"); u != "" {
		return u
	}
	return DefaultPostgresURL
}

// NATSURL is the shared NATS server's URL, from FERRY_NATS_URL; the test
// fails if nothing answers there.
func NATSURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv("FERRY_NATS_URL")
	if u == "" {
		u = DefaultNATSURL
	}
	p, err := url.Parse(u)
	if err != nil {
		t.Fatalf("FERRY_NATS_URL %q: %v", u, err)
	}
	c, err := net.DialTimeout("tcp", p.Host, 5*time.Second)
	if err != nil {
		t.Fatalf("NATS is not reachable at %s (%v): start it (see .ci/run) or set FERRY_NATS_URL", u, err)
	}
	c.Close()
	return u
}

// Name returns a fresh name for a test's schema or subject prefix:
// prefix, then random hex.
func Name(prefix string) string {
	var b [6]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// PostgresURL creates an empty schema of its own for the test in the
// shared database and returns a URL whose connections work in it
// (search_path); the schema is dropped when the test ends. The test fails
// if PostgreSQL cannot be reached.
func PostgresURL(t testing.TB) string {
	t.Helper()
	admin := PostgresAdminURL()
	schema := Name("ferry_t_")
	runSQL(t, admin, "CREATE SCHEMA "+schema)
	t.Cleanup(func() { runSQL(t, admin, "DROP SCHEMA "+schema+" CASCADE") })
	return WithParam(admin, "search_path", schema)
}

// WithParam adds name=value to a postgres:// URL's query.
func WithParam(u, name, value string) string {
	sep := "?"
	if strings.Contains(u, "?") {
		sep = "&"
	}
	return u + sep + name + "=" + url.QueryEscape(value)
}

// exec runs one statement on a connection of its own.
func runSQL(t testing.TB, u, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatalf("PostgreSQL is not reachable at %s (%v): start it (see .ci/run) or set FERRY_POSTGRES_URL", u, err)
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitTCP waits until something accepts connections at addr.
func waitTCP(t testing.TB, addr string, within time.Duration) {
	t.Helper()
	for end := time.Now().Add(within); ; time.Sleep(20 * time.Millisecond) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(end) {
			t.Fatalf("nothing accepts connections at %s after %v", addr, within)
		}
	}
}
