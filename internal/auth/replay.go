package auth

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"time"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/auth/authdb"
)

// A refresh sent with an Idempotency-Key is retried, when its answer was lost, with the token
// it rotated away and the same key. Counted as a reuse, that retry would revoke the session
// the client still holds; instead it gets the lost answer again. What it needs is written on
// the session by the rotation's own UPDATE (a crash after the commit loses nothing) and only
// while no later rotation happened: the answer, sealed under a key derived from the token the
// rotation took, which only the client that sent it holds. The database never holds a token
// in the clear, and a replay needs the session live (a logout, a password change, a deletion
// end it) and the same key, so a leaked old token alone is still a reuse.

// replayFor is what a rotation under key, taking token, leaves for a retry of it; nothing
// without a key.
func replayFor(key, token string, sid uuid.UUID, pair TokenPair) (authdb.Replay, error) {
	if key == "" {
		return authdb.Replay{}, nil
	}
	plain, err := json.Marshal(pair)
	if err != nil {
		return authdb.Replay{}, err
	}
	aead, err := replayCipher(token)
	if err != nil {
		return authdb.Replay{}, err
	}
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plain)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return authdb.Replay{}, err
	}
	return authdb.Replay{TokenHash: HashToken(token), KeyHash: HashToken(key),
		Sealed: aead.Seal(nonce, nonce, plain, sid[:])}, nil
}

// replayed returns the answer the session's last rotation left for a retry that presents
// token under key, if this is that retry: the same token and key, within window of the
// rotation, and the answer still the session's current pair.
func replayed(sess authdb.Session, key, token string, window time.Duration) (TokenPair, bool) {
	r := sess.Replay
	if key == "" || r.Sealed == nil || sess.RefreshedAt == nil || time.Since(*sess.RefreshedAt) > window ||
		subtle.ConstantTimeCompare(r.TokenHash, HashToken(token)) != 1 ||
		subtle.ConstantTimeCompare(r.KeyHash, HashToken(key)) != 1 {
		return TokenPair{}, false
	}
	aead, err := replayCipher(token)
	if err != nil || len(r.Sealed) < aead.NonceSize() {
		return TokenPair{}, false
	}
	n := aead.NonceSize()
	plain, err := aead.Open(nil, r.Sealed[:n], r.Sealed[n:], sess.ID[:])
	if err != nil {
		return TokenPair{}, false
	}
	var pair TokenPair
	// A rotation by a program that did not know of replays leaves an older answer behind:
	// only one whose refresh token is the session's current one may be given again.
	if json.Unmarshal(plain, &pair) != nil ||
		subtle.ConstantTimeCompare(HashToken(pair.RefreshToken), sess.RefreshTokenHash) != 1 {
		return TokenPair{}, false
	}
	pair.Replayed = true
	return pair, true
}

// replayCipher is AES-256-GCM under a key derived from the refresh token a rotation took.
func replayCipher(token string) (cipher.AEAD, error) {
	key, err := hkdf.Key(sha256.New, []byte(token), nil, "dispatch refresh replay", 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}
