package auth_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/auth"
)

// TestRoleLevels pins the levels and groups of SPEC §2.
func TestRoleLevels(t *testing.T) {
	want := map[auth.Role]int{"superadmin": 99, "admin": 10, "shipper": 2, "delivery": 2, "financial": 2, "user": 1}
	if len(auth.Roles) != len(want) {
		t.Fatalf("roles %v", auth.Roles)
	}
	for _, r := range auth.Roles {
		if !r.Valid() || r.Level() != want[r] {
			t.Errorf("%s: valid %v level %d, want %d", r, r.Valid(), r.Level(), want[r])
		}
	}
	for _, bad := range []auth.Role{"", "root", "Admin", "SUPERADMIN"} {
		if bad.Valid() || bad.Level() != 0 {
			t.Errorf("%q counts as a role", bad)
		}
	}
	for _, a := range auth.Roles {
		for _, b := range auth.Roles {
			if got := a.Outranks(b); got != (want[a] > want[b]) {
				t.Errorf("%s.Outranks(%s) = %v", a, b, got)
			}
		}
		if a.Outranks(a) {
			t.Errorf("%s outranks itself", a)
		}
		if !a.Outranks("unknown") {
			t.Errorf("%s does not outrank an unknown role", a)
		}
	}
}

func TestGroups(t *testing.T) {
	for name, tc := range map[string]struct {
		g    auth.Group
		want []auth.Role
	}{
		"admins":    {auth.Admins, []auth.Role{"superadmin", "admin"}},
		"financial": {auth.Financial, []auth.Role{"superadmin", "admin", "financial"}},
		"shipping":  {auth.Shipping, []auth.Role{"superadmin", "admin", "shipper"}},
		"delivery":  {auth.Delivery, []auth.Role{"superadmin", "admin", "delivery"}},
	} {
		for _, r := range auth.Roles {
			in := false
			for _, w := range tc.want {
				in = in || w == r
			}
			if tc.g.Allows(r) != in {
				t.Errorf("%s allows %s = %v, want %v", name, r, tc.g.Allows(r), in)
			}
		}
		if tc.g.Allows("") {
			t.Errorf("%s allows the empty role", name)
		}
	}
}

func TestHasher(t *testing.T) {
	ctx := context.Background()
	h := auth.NewHasher(auth.Params{MemoryKiB: 64, Time: 1, Threads: 1}, 2)
	hash, err := h.Hash(ctx, "correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(hash, "$argon2id$v=19$m=64,t=1,p=1$") || strings.Contains(hash, "correct horse") {
		t.Fatalf("hash %q", hash)
	}
	again, _ := h.Hash(ctx, "correct horse")
	if again == hash {
		t.Fatal("two hashes of one password are equal: no salt")
	}
	for pw, want := range map[string]bool{"correct horse": true, "correct horse ": false, "Correct horse": false, "": false} {
		if ok, err := h.Verify(ctx, pw, hash); err != nil || ok != want {
			t.Errorf("Verify(%q) = %v, %v; want %v", pw, ok, err, want)
		}
	}
	// A hash made with other parameters still verifies (they travel in the hash).
	other := auth.NewHasher(auth.Params{MemoryKiB: 128, Time: 2, Threads: 1}, 1)
	if ok, err := other.Verify(ctx, "correct horse", hash); err != nil || !ok {
		t.Fatalf("verify with other parameters: %v %v", ok, err)
	}
	// An unknown account (empty hash) is a plain mismatch.
	if ok, err := h.Verify(ctx, "anything", ""); ok || err != nil {
		t.Fatalf("empty hash: %v %v", ok, err)
	}
	for _, bad := range []string{"plain", "$argon2i$v=19$m=64,t=1,p=1$c2FsdA$a2V5", "$argon2id$v=18$m=64,t=1,p=1$c2FsdA$a2V5",
		"$argon2id$v=19$m=64,t=0,p=1$c2FsdA$a2V5", "$argon2id$v=19$m=64,t=1,p=1$!!$a2V5", "$argon2id$v=19$m=64,t=1,p=1$c2FsdA$"} {
		if ok, err := h.Verify(ctx, "x", bad); ok || err == nil {
			t.Errorf("malformed hash %q: ok=%v err=%v", bad, ok, err)
		}
	}
}

func TestTokens(t *testing.T) {
	tk := auth.NewTokens(strings.Repeat("a", 32), strings.Repeat("b", 32), time.Minute, time.Hour)
	uid, sid := uuid.New(), uuid.New()
	access, err := tk.Access(uid, sid, auth.RoleAdmin, "pt-BR")
	if err != nil {
		t.Fatal(err)
	}
	refresh, hash, err := tk.Refresh(uid, sid)
	if err != nil {
		t.Fatal(err)
	}
	if u, s, err := tk.ParseAccess(access); err != nil || u != uid || s != sid {
		t.Fatalf("ParseAccess: %v %v %v", u, s, err)
	}
	if u, s, err := tk.ParseRefresh(refresh); err != nil || u != uid || s != sid {
		t.Fatalf("ParseRefresh: %v %v %v", u, s, err)
	}
	if string(hash) != string(auth.HashToken(refresh)) || strings.Contains(string(hash), refresh) {
		t.Fatal("refresh hash")
	}
	// One kind is never accepted as the other.
	if _, _, err := tk.ParseAccess(refresh); err == nil {
		t.Fatal("a refresh token parsed as an access token")
	}
	if _, _, err := tk.ParseRefresh(access); err == nil {
		t.Fatal("an access token parsed as a refresh token")
	}
	// Each access token is new, even within the second of the last (iat counts seconds).
	if a2, err := tk.Access(uid, sid, auth.RoleAdmin, "pt-BR"); err != nil || a2 == access {
		t.Fatalf("a second access token of the session: %v, same as the first: %v", err, a2 == access)
	}
	// Each rotation is a new token.
	r2, _, _ := tk.Refresh(uid, sid)
	if r2 == refresh {
		t.Fatal("two refresh tokens of one session are equal")
	}
	// Another deployment's secret, tampering, expiry and oversize are refused.
	other := auth.NewTokens(strings.Repeat("c", 32), strings.Repeat("d", 32), time.Minute, time.Hour)
	if _, _, err := other.ParseAccess(access); err == nil {
		t.Fatal("token of another secret accepted")
	}
	if _, _, err := tk.ParseAccess(access[:len(access)-2] + "xx"); err == nil {
		t.Fatal("tampered token accepted")
	}
	// The signature's last character carries two unused bits: a token that differs from a
	// genuine one only there is not the token that was issued.
	for _, tok := range []string{access, refresh} {
		if _, _, err := tk.ParseAccess(padded(t, tok)); err == nil && tok == access {
			t.Fatal("access token with its unused signature bits set accepted")
		}
		if _, _, err := tk.ParseRefresh(padded(t, tok)); err == nil && tok == refresh {
			t.Fatal("refresh token with its unused signature bits set accepted")
		}
	}
	expired := auth.NewTokens(strings.Repeat("a", 32), strings.Repeat("b", 32), -time.Second, time.Hour)
	old, _ := expired.Access(uid, sid, auth.RoleUser, "en")
	if _, _, err := tk.ParseAccess(old); err == nil {
		t.Fatal("expired token accepted")
	}
	if _, _, err := tk.ParseAccess(access + strings.Repeat("a", 5000)); err == nil {
		t.Fatal("oversized token accepted")
	}
}

// padded returns tok with the unused low bits of its last base64url character set: the same
// bytes to a lenient decoder, another text to anyone else.
func padded(t *testing.T, tok string) string {
	t.Helper()
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	sig := tok[strings.LastIndexByte(tok, '.')+1:]
	if len(sig)%4 != 3 { // 32 bytes of HMAC-SHA256: 43 characters, the last with 2 unused bits
		t.Fatalf("signature of %d characters", len(sig))
	}
	v := strings.IndexByte(alphabet, tok[len(tok)-1])
	if v < 0 || v&3 != 0 {
		t.Fatalf("last character %q is not canonical", tok[len(tok)-1])
	}
	return tok[:len(tok)-1] + string(alphabet[v|1])
}
