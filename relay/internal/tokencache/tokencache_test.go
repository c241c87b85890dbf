package tokencache

import (
	"testing"
	"time"
)

func TestCache(t *testing.T) {
	now := time.Unix(1000, 0)
	c := &Cache{TTL: time.Second, Now: func() time.Time { return now }}
	a, b := [16]byte{1}, [16]byte{2}
	h1, h2 := [32]byte{7}, [32]byte{8}
	if c.Has(a, h1) {
		t.Fatal("empty cache has a hash")
	}
	c.Fill(a, h1, c.Generation())
	c.Fill(a, h2, c.Generation())
	if !c.Has(a, h1) || !c.Has(a, h2) || c.Has(b, h1) {
		t.Fatal("Has after Fill: want both of a's hashes and none of b's")
	}
	now = now.Add(2 * time.Second)
	if c.Has(a, h1) {
		t.Fatal("a hash outlived the TTL")
	}
	// A read that began before an Invalidate must not fill the cache.
	gen := c.Generation()
	c.Invalidate(a)
	c.Fill(a, h1, gen)
	if c.Has(a, h1) {
		t.Fatal("a stale Fill went into the cache")
	}
	c.Fill(a, h1, c.Generation())
	c.Invalidate(a)
	if c.Has(a, h1) {
		t.Fatal("Invalidate left a hash")
	}
}

func TestCacheForever(t *testing.T) {
	now := time.Unix(1000, 0)
	c := &Cache{Now: func() time.Time { return now }}
	c.Fill([16]byte{1}, [32]byte{1}, c.Generation())
	now = now.Add(1000 * time.Hour)
	if !c.Has([16]byte{1}, [32]byte{1}) {
		t.Fatal("a hash expired with no TTL")
	}
}

func TestCacheBounded(t *testing.T) {
	var c Cache
	for i := range Max + 10 {
		c.Fill([16]byte{byte(i), byte(i >> 8), byte(i >> 16)}, [32]byte{1}, c.Generation())
	}
	if c.n != Max || len(c.m) != Max {
		t.Fatalf("cache holds %d hashes in %d mailboxes, want %d", c.n, len(c.m), Max)
	}
}
