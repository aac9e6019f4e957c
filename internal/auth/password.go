package auth

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Params are argon2id cost parameters.
type Params struct {
	MemoryKiB uint32
	Time      uint32
	Threads   uint8
}

// Hasher hashes and verifies passwords with argon2id in the PHC string format, so a hash keeps
// the parameters it was made with and old hashes verify after the parameters change.
//
// Each hash holds MemoryKiB of RAM while it runs; a semaphore bounds how many run at once so a
// burst of logins cannot exhaust memory.
type Hasher struct {
	p     Params
	slots chan struct{}
	dummy string
}

// NewHasher returns a hasher running at most concurrency hashes at a time.
func NewHasher(p Params, concurrency int) *Hasher {
	h := &Hasher{p: p, slots: make(chan struct{}, max(concurrency, 1))}
	h.dummy, _ = h.Hash(context.Background(), "dispatch-dummy-password")
	return h
}

// Hash returns the encoded argon2id hash of password.
func (h *Hasher) Hash(ctx context.Context, password string) (string, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	if err := h.acquire(ctx); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(password), salt, h.p.Time, h.p.MemoryKiB, h.p.Threads, 32)
	<-h.slots
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, h.p.MemoryKiB, h.p.Time, h.p.Threads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key)), nil
}

// Verify reports whether password matches encoded. An empty encoded hash is checked against a
// dummy hash so that an unknown account costs the same time as a wrong password.
func (h *Hasher) Verify(ctx context.Context, password, encoded string) (bool, error) {
	if encoded == "" {
		_, err := h.Verify(ctx, password, h.dummy)
		return false, err
	}
	p, salt, want, err := decodeHash(encoded)
	if err != nil {
		return false, err
	}
	if err := h.acquire(ctx); err != nil {
		return false, err
	}
	got := argon2.IDKey([]byte(password), salt, p.Time, p.MemoryKiB, p.Threads, uint32(len(want)))
	<-h.slots
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}

func (h *Hasher) acquire(ctx context.Context) error {
	select {
	case h.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

var errBadHash = errors.New("auth: malformed password hash")

func decodeHash(encoded string) (Params, []byte, []byte, error) {
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return Params{}, nil, nil, errBadHash
	}
	var version int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return Params{}, nil, nil, errBadHash
	}
	var p Params
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.MemoryKiB, &p.Time, &p.Threads); err != nil {
		return Params{}, nil, nil, errBadHash
	}
	salt, err1 := base64.RawStdEncoding.DecodeString(parts[4])
	key, err2 := base64.RawStdEncoding.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(key) == 0 || p.Threads == 0 || p.Time == 0 {
		return Params{}, nil, nil, errBadHash
	}
	return p, salt, key, nil
}
