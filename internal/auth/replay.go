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

// A refresh whose answer was lost is retried with the token it rotated away; counted as a
// reuse, that retry would revoke the session the client still holds. Sent with an
// Idempotency-Key, the rotation writes what its retry needs on the session, in its own UPDATE
// (a crash after the commit loses nothing): the answer, sealed under a key derived from the
// server's refresh secret and the token it took. A retry with that token and key within
// ReplayWindow, while the session lives and no rotation came after, is given the answer again.
// The window is short because whoever holds the old token and the key (a leaked retry) gets
// the live pair within it, without the revocation a reuse brings.

// ReplayWindow is how long after a rotation its retry is given the answer again: a client
// retries a lost answer within seconds.
const ReplayWindow = time.Minute

// replayFor is what a rotation under key, taking token, leaves for a retry of it; nothing
// without a key.
func (t *Tokens) replayFor(key, token string, sid uuid.UUID, pair TokenPair) (authdb.Replay, error) {
	if key == "" {
		return authdb.Replay{}, nil
	}
	plain, err := json.Marshal(pair)
	if err != nil {
		return authdb.Replay{}, err
	}
	aead, err := t.replayCipher(token)
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
// token under key, if this is that retry: the same token and key, within the window, and the
// answer still the session's current pair.
func (t *Tokens) replayed(sess authdb.Session, key, token string) (TokenPair, bool) {
	r := sess.Replay
	if key == "" || r.Sealed == nil || !sess.ReplayFresh ||
		subtle.ConstantTimeCompare(r.TokenHash, HashToken(token)) != 1 ||
		subtle.ConstantTimeCompare(r.KeyHash, HashToken(key)) != 1 {
		return TokenPair{}, false
	}
	aead, err := t.replayCipher(token)
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

// replayCipher is AES-256-GCM under a key derived from the refresh secret and the refresh token
// a rotation took: a copy of the database opens nothing, even with old tokens.
func (t *Tokens) replayCipher(token string) (cipher.AEAD, error) {
	key, err := hkdf.Key(sha256.New, []byte(token), t.refreshSecret, "dispatch refresh replay", 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}
