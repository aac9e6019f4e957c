package idempotency

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
)

// DeferSealed is Defer for a request whose answer carries credentials (a login's or a
// refresh's token pair). Its fingerprint also covers credential, what the request presented
// besides its body (its Authorization header), so one key under the shared anonymous scope is
// never answered for another caller's credential. The answer is stored sealed (AES-256-GCM)
// under a key derived from the server secret and the whole request: the table holds no usable
// token, and only the same request sent again (key, body and credential) opens it.
func (s *Store) DeferSealed(sc Scope, body []byte, credential string) *Claim {
	canonical := Canonical(body)
	fp := hmac.New(sha256.New, s.key)
	fmt.Fprintf(fp, "%s\n%s\n%s\n", sc.Method, sc.Path, credential)
	fp.Write(canonical)
	seal := hmac.New(sha256.New, s.sealKey)
	fmt.Fprintf(seal, "%s\n%s\n%s\n%s\n%s\n", sc.Owner, sc.Method, sc.Path, sc.Key, credential)
	seal.Write(canonical)
	c := Defer(sc, fp.Sum(nil))
	c.seal = seal.Sum(nil)
	return c
}

// stored is the answer body as the claim stores it: sealed when the claim is (a random nonce,
// then the ciphertext and its tag).
func (c *Claim) stored(body []byte) []byte {
	if c.seal == nil {
		return body
	}
	aead := newAEAD(c.seal)
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(body)+aead.Overhead())
	rand.Read(nonce) // crypto/rand.Read never returns an error
	return aead.Seal(nonce, nonce, body, nil)
}

// opened is a stored answer body as the claim's request gets it back.
func (c *Claim) opened(stored []byte) ([]byte, error) {
	if c.seal == nil {
		return stored, nil
	}
	aead := newAEAD(c.seal)
	if len(stored) < aead.NonceSize() {
		return nil, errors.New("idempotency: a sealed answer too short to open")
	}
	body, err := aead.Open(nil, stored[:aead.NonceSize()], stored[aead.NonceSize():], nil)
	if err != nil {
		return nil, fmt.Errorf("idempotency: open a sealed answer: %w", err)
	}
	return body, nil
}

// newAEAD is AES-256-GCM under key, an HMAC-SHA256 sum (32 bytes, which AES always takes).
func newAEAD(key []byte) cipher.AEAD {
	block, err := aes.NewCipher(key)
	if err != nil {
		panic(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return aead
}
