package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

// Tokens issues and verifies the two JWTs of a session. Access and refresh tokens are signed
// with different secrets, so one can never be presented as the other.
type Tokens struct {
	accessSecret, refreshSecret []byte
	AccessTTL, RefreshTTL       time.Duration
	now                         func() time.Time
	// verified keeps the access tokens already verified, by their whole text (signature
	// included), until they expire: every request presents one, and verifying it again
	// (decoding, JSON, HMAC) would give the same answer.
	verified expiring[string, session]
}

// session is who an access token speaks for.
type session struct{ userID, sessionID uuid.UUID }

// NewTokens returns a token issuer.
func NewTokens(accessSecret, refreshSecret string, accessTTL, refreshTTL time.Duration) *Tokens {
	return &Tokens{
		accessSecret: []byte(accessSecret), refreshSecret: []byte(refreshSecret),
		AccessTTL: accessTTL, RefreshTTL: refreshTTL, now: time.Now,
	}
}

// AccessClaims are the claims of an access token; jti is the session id. nonce tells apart
// the tokens of one session issued in the same second (iat counts whole seconds): a refresh
// right after the login gives a new pair, not the same access token again.
type AccessClaims struct {
	Role  Role   `json:"role"`
	Lang  string `json:"lang"`
	Nonce string `json:"nonce"`
	jwt.RegisteredClaims
}

// RefreshClaims are the claims of a refresh token. Each rotation issues a token with a fresh
// jti; the session stores the hash of the only one still valid.
type RefreshClaims struct {
	SessionID string `json:"sid"`
	jwt.RegisteredClaims
}

var errBadToken = errors.New("auth: invalid token")

// nonce is 16 random bytes in base64url.
func nonce() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// Access signs an access token for the session.
func (t *Tokens) Access(userID, sessionID uuid.UUID, role Role, lang string) (string, error) {
	n, err := nonce()
	if err != nil {
		return "", err
	}
	now := t.now()
	return jwt.NewWithClaims(jwt.SigningMethodHS256, AccessClaims{
		Role: role, Lang: lang, Nonce: n,
		RegisteredClaims: jwt.RegisteredClaims{
			Subject: userID.String(), ID: sessionID.String(),
			IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(t.AccessTTL)),
		},
	}).SignedString(t.accessSecret)
}

// Refresh signs a new refresh token for the session and returns it with its hash.
func (t *Tokens) Refresh(userID, sessionID uuid.UUID) (token string, hash []byte, err error) {
	id, err := nonce()
	if err != nil {
		return "", nil, err
	}
	now := t.now()
	token, err = jwt.NewWithClaims(jwt.SigningMethodHS256, RefreshClaims{
		SessionID: sessionID.String(),
		RegisteredClaims: jwt.RegisteredClaims{
			Subject: userID.String(), ID: id,
			IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(t.RefreshTTL)),
		},
	}).SignedString(t.refreshSecret)
	return token, HashToken(token), err
}

// HashToken is how a refresh token is stored: never in clear.
func HashToken(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return sum[:]
}

// ParseAccess verifies an access token and returns the user and session ids.
func (t *Tokens) ParseAccess(token string) (userID, sessionID uuid.UUID, err error) {
	now := t.now()
	if s, ok := t.verified.get(token, now); ok {
		return s.userID, s.sessionID, nil
	}
	var c AccessClaims
	if err := t.parse(token, &c, t.accessSecret); err != nil {
		return uuid.Nil, uuid.Nil, err
	}
	if userID, sessionID, err = ids(c.Subject, c.ID); err == nil {
		t.verified.put(token, session{userID, sessionID}, c.ExpiresAt.Time, now)
	}
	return userID, sessionID, err
}

// ParseRefresh verifies a refresh token and returns the user and session ids.
func (t *Tokens) ParseRefresh(token string) (userID, sessionID uuid.UUID, err error) {
	var c RefreshClaims
	if err := t.parse(token, &c, t.refreshSecret); err != nil {
		return uuid.Nil, uuid.Nil, err
	}
	return ids(c.Subject, c.SessionID)
}

// parse verifies a token of either kind. Decoding is strict: a text that differs from the one
// issued only in the unused bits of a base64url character is refused, not read as the same token.
func (t *Tokens) parse(token string, claims jwt.Claims, secret []byte) error {
	if len(token) > 4096 {
		return errBadToken
	}
	_, err := jwt.ParseWithClaims(token, claims, func(*jwt.Token) (any, error) { return secret, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}), jwt.WithStrictDecoding(),
		jwt.WithExpirationRequired(), jwt.WithIssuedAt(), jwt.WithTimeFunc(t.now))
	if err != nil {
		return errBadToken
	}
	return nil
}

func ids(sub, sid string) (uuid.UUID, uuid.UUID, error) {
	u, err1 := uuid.Parse(sub)
	s, err2 := uuid.Parse(sid)
	if err1 != nil || err2 != nil {
		return uuid.Nil, uuid.Nil, errBadToken
	}
	return u, s, nil
}
