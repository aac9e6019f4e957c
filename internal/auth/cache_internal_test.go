package auth

import (
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// A verified access token is answered from memory, but only while it is valid: past its expiry
// it is refused as if it had never been seen, and a change to any character is a new token.
func TestVerifiedAccessTokensLapseWithTheToken(t *testing.T) {
	now := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	tk := NewTokens(strings.Repeat("a", 32), strings.Repeat("b", 32), time.Minute, time.Hour)
	tk.now = func() time.Time { return now }
	uid, sid := uuid.New(), uuid.New()
	access, err := tk.Access(uid, sid, RoleUser, "en")
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // verified, then remembered
		if u, s, err := tk.ParseAccess(access); err != nil || u != uid || s != sid {
			t.Fatalf("ParseAccess: %v %v %v", u, s, err)
		}
	}
	if _, ok := tk.verified.get(access, now); !ok {
		t.Fatal("a verified token was not kept")
	}
	i := len(access) - 10 // inside the signature
	flipped := access[:i] + string(access[i]^1) + access[i+1:]
	for _, bad := range []string{flipped, access + "a", "x" + access} {
		if _, _, err := tk.ParseAccess(bad); err == nil {
			t.Fatalf("%q accepted after the genuine token was verified", bad)
		}
	}
	now = now.Add(time.Minute - time.Nanosecond)
	if _, _, err := tk.ParseAccess(access); err != nil {
		t.Fatalf("refused just before expiry: %v", err)
	}
	now = now.Add(time.Nanosecond)
	if _, _, err := tk.ParseAccess(access); err == nil {
		t.Fatal("accepted at its expiry")
	}
}

func TestExpiringStaysBounded(t *testing.T) {
	now := time.Now()
	var c expiring[int, int]
	for i := range cacheCap {
		c.put(i, i, now.Add(time.Duration(i%2)*time.Hour), now) // even ones have lapsed already
	}
	c.put(-1, -1, now.Add(time.Hour), now)
	if len(c.m) != cacheCap/2+1 {
		t.Fatalf("lapsed entries not cleared: %d left", len(c.m))
	}
	if v, ok := c.get(1, now); !ok || v != 1 {
		t.Fatal("a live entry was cleared with the lapsed ones")
	}
	for i := range cacheCap {
		c.put(cacheCap+i, i, now.Add(time.Hour), now)
	}
	if len(c.m) > cacheCap {
		t.Fatalf("%d entries kept, cap %d", len(c.m), cacheCap)
	}
	c.put(-2, -2, now.Add(time.Hour), now)
	c.drop(-2)
	if _, ok := c.get(-2, now); ok {
		t.Fatal("dropped entry still there")
	}

	// keepAll forgets nothing live, however many entries, and sweeps the lapsed ones: with one
	// entry in a hundred live, at most twice the live ones plus 1,024 stay between sweeps.
	all := expiring[int, int]{keepAll: true}
	const n, live = 3 * cacheCap, 3 * cacheCap / 100
	for i := range n {
		until := now // lapsed already
		if i%100 == 0 {
			until = now.Add(time.Hour)
		}
		all.put(i, i, until, now)
	}
	for i := 0; i < n; i += 100 {
		if _, ok := all.get(i, now); !ok {
			t.Fatalf("keepAll forgot live entry %d", i)
		}
	}
	if len(all.m) > 2*live+1025 {
		t.Fatalf("keepAll kept %d entries for %d live ones", len(all.m), live)
	}
	for i := range cacheCap + 1 { // more live entries than a cache may hold
		all.put(n+i, i, now.Add(time.Hour), now)
	}
	for i := range cacheCap + 1 {
		if _, ok := all.get(n+i, now); !ok {
			t.Fatalf("keepAll forgot live entry %d past the cache bound", n+i)
		}
	}
}

// BenchmarkParseAccess prices a request's token check: verified (the first time a process
// sees the token) and remembered (every later request on it).
func BenchmarkParseAccess(b *testing.B) {
	tk := NewTokens(strings.Repeat("a", 32), strings.Repeat("b", 32), time.Hour, time.Hour)
	access, err := tk.Access(uuid.New(), uuid.New(), RoleUser, "en")
	if err != nil {
		b.Fatal(err)
	}
	b.Run("verified", func(b *testing.B) {
		for b.Loop() {
			tk.verified.drop(access)
			if _, _, err := tk.ParseAccess(access); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("remembered", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := tk.ParseAccess(access); err != nil {
				b.Fatal(err)
			}
		}
	})
}
