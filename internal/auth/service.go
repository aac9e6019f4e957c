package auth

import (
	"context"
	"crypto/subtle"
	"errors"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/dispatchhq/dispatch/internal/apperr"
	"github.com/dispatchhq/dispatch/internal/auth/authdb"
	"github.com/dispatchhq/dispatch/internal/notification"
	"github.com/dispatchhq/dispatch/internal/outbox"
	"github.com/dispatchhq/dispatch/internal/platform/logging"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/platform/redisx"
	"github.com/dispatchhq/dispatch/internal/tasks"
)

// Errors of the auth flows.
var (
	ErrInvalidCredentials = apperr.New(apperr.Unauthorized, "auth.errors.invalidCredentials")
	ErrInvalidToken       = apperr.New(apperr.Unauthorized, "auth.errors.invalidToken")
	ErrRefreshReused      = apperr.New(apperr.Unauthorized, "auth.errors.refreshTokenReused")
)

// Credentials is what a login checks a password against.
type Credentials struct {
	UserID       uuid.UUID
	PasswordHash string
	Role         Role
	Language     string
}

// CredentialStore finds a live user by email (case-insensitively).
type CredentialStore interface {
	CredentialsByEmail(ctx context.Context, email string) (Credentials, bool, error)
}

// TokenPair is the answer of a login or a refresh.
type TokenPair struct {
	AccessToken  string    `json:"accessToken"`
	RefreshToken string    `json:"refreshToken"`
	ExpiresIn    int       `json:"expiresIn"`
	UserID       uuid.UUID `json:"userId"`
	Language     string    `json:"language"`
	// Replayed marks the answer of a refresh given again to a retry under its Idempotency-Key.
	Replayed bool `json:"-"`
}

// Client describes where a login comes from; it is stored on the session.
type Client struct {
	IP        string
	UserAgent string
}

// IdentityTTL bounds how long a request may be authorized from a cached role: a demoted or
// deleted user loses access within this time even if the denylist write was lost.
const IdentityTTL = time.Second

// Service runs logins, refreshes, logouts and per-request authentication.
type Service struct {
	db     *postgres.DB
	Hasher *Hasher
	Tokens *Tokens
	users  CredentialStore
	wake   *outbox.Waker
	log    *slog.Logger
	outage *slog.Logger // what every request logs while Redis is away, once in a while
	// cache keeps identities for IdentityTTL so a burst of requests on one session costs one
	// database read per second.
	cache  expiring[uuid.UUID, authdb.Identity]
	denied *denylist
}

// NewService wires the auth service.
func NewService(db *postgres.DB, rdb *redis.Client, keys redisx.Prefix, h *Hasher, t *Tokens, users CredentialStore,
	wake *outbox.Waker, log *slog.Logger) *Service {
	return &Service{db: db, Hasher: h, Tokens: t, users: users, wake: wake, log: log, outage: logging.Sometimes(log, logging.OutageEvery),
		denied: newDenylist(rdb, keys.Key("denylist"), keys.Key("denylist", "added"))}
}

// FollowDenylist keeps a copy of the denylist in this process until ctx ends, so requests are
// checked against it without a round trip to Redis (the API runs it; see denylist).
func (s *Service) FollowDenylist(ctx context.Context) { s.denied.follow(ctx, s.log) }

// Login checks the password and opens a session. A wrong email and a wrong password fail
// alike and take the same time.
func (s *Service) Login(ctx context.Context, email, password string, client Client) (TokenPair, error) {
	cred, found, err := s.users.CredentialsByEmail(ctx, email)
	if err != nil {
		return TokenPair{}, err
	}
	ok, err := s.Hasher.Verify(ctx, password, cred.PasswordHash) // empty hash → dummy check
	if err != nil {
		return TokenPair{}, err
	}
	if !found || !ok {
		return TokenPair{}, ErrInvalidCredentials
	}
	// The user may change while the password is checked. A change of the password, or a
	// deletion, revokes the sessions it finds, so one opened after it must not be: the session
	// opens only on the user as checked. A role changed meanwhile is read again.
	for range 2 {
		pair, opened, err := s.open(ctx, cred, client)
		if err != nil || opened {
			return pair, err
		}
		again, found, err := s.users.CredentialsByEmail(ctx, email)
		if err != nil {
			return TokenPair{}, err
		}
		if !found || again.UserID != cred.UserID || again.PasswordHash != cred.PasswordHash {
			return TokenPair{}, ErrInvalidCredentials
		}
		cred = again
	}
	return TokenPair{}, ErrInvalidCredentials
}

// open opens a session for the user cred describes, if the user is still so.
func (s *Service) open(ctx context.Context, cred Credentials, client Client) (TokenPair, bool, error) {
	sid := uuid.New()
	refresh, hash, err := s.Tokens.Refresh(cred.UserID, sid)
	if err != nil {
		return TokenPair{}, false, err
	}
	var opened bool
	err = s.wake.InTx(ctx, func(tx *postgres.Tx) error {
		var err error
		opened, err = authdb.Open(ctx, tx, authdb.Session{
			ID: sid, UserID: cred.UserID, RefreshTokenHash: hash,
			ExpiresAt: time.Now().Add(s.Tokens.RefreshTTL), UserAgent: truncate(client.UserAgent, 512), IP: client.IP,
		}, cred.PasswordHash, string(cred.Role))
		if err != nil || !opened {
			return err
		}
		return outbox.Write(ctx, tx, outbox.Message{Type: tasks.NotifyUser, Payload: tasks.Notify{
			UserID: cred.UserID, Event: notification.EventAuthLogin,
			Data: map[string]any{"ip": client.IP, "at": notification.Timestamp(time.Now())},
		}})
	})
	if err != nil || !opened {
		return TokenPair{}, false, err
	}
	pair, err := s.pair(cred.UserID, sid, cred.Role, cred.Language, refresh)
	return pair, true, err
}

// Refresh rotates the session's refresh token. Presenting a token that was already rotated
// means it leaked (or a client raced itself): the whole session is revoked. A retry of a
// rotation made under an Idempotency-Key, with the same key, gets that rotation's answer
// instead (see replay.go); key is empty when the request had none.
func (s *Service) Refresh(ctx context.Context, token, key string) (TokenPair, error) {
	uid, sid, err := s.Tokens.ParseRefresh(token)
	if err != nil {
		return TokenPair{}, ErrInvalidToken
	}
	var (
		reused bool
		pair   TokenPair
	)
	err = postgres.WithTx(ctx, s.db, func(tx *postgres.Tx) error {
		sess, err := authdb.Lock(ctx, tx, sid, ReplayWindow)
		if err != nil {
			return err
		}
		if sess.UserID != uid || sess.RevokedAt != nil || time.Now().After(sess.ExpiresAt) {
			return authdb.ErrNotFound
		}
		if subtle.ConstantTimeCompare(sess.RefreshTokenHash, HashToken(token)) != 1 {
			var ok bool
			if pair, ok = s.Tokens.replayed(sess, key, token); ok {
				return nil
			}
			reused = true
			return authdb.Revoke(ctx, tx, sid, "refresh token reuse")
		}
		ident, err := authdb.IdentityOf(ctx, tx, sid, uid)
		if err != nil {
			return err
		}
		refresh, hash, err := s.Tokens.Refresh(uid, sid)
		if err != nil {
			return err
		}
		if pair, err = s.pair(uid, sid, Role(ident.Role), ident.Language, refresh); err != nil {
			return err
		}
		replay, err := s.Tokens.replayFor(key, token, sid, pair)
		if err != nil {
			return err
		}
		return authdb.Rotate(ctx, tx, sid, hash, time.Now().Add(s.Tokens.RefreshTTL), replay)
	})
	switch {
	case errors.Is(err, authdb.ErrNotFound):
		return TokenPair{}, ErrInvalidToken
	case err != nil:
		return TokenPair{}, err
	case reused:
		s.Deny(ctx, sid)
		s.log.WarnContext(ctx, "refresh token reused; session revoked", "sessionId", sid, "userId", uid)
		return TokenPair{}, ErrRefreshReused
	case pair.Replayed:
		s.log.InfoContext(ctx, "refresh answered again for a retry under its key", "sessionId", sid, "userId", uid)
	}
	return pair, nil
}

// Logout revokes the caller's session: its access and refresh tokens stop working at once.
func (s *Service) Logout(ctx context.Context, p Principal) error {
	if err := authdb.Revoke(ctx, s.db, p.SessionID, "logout"); err != nil {
		return err
	}
	s.Deny(ctx, p.SessionID)
	return nil
}

// DeleteExpiredSessions deletes the sessions that expired or were revoked before cutoff.
func (s *Service) DeleteExpiredSessions(ctx context.Context, cutoff time.Time) (int64, error) {
	return authdb.DeleteExpired(ctx, s.db, cutoff)
}

// RevokeUser revokes every session of a user inside the caller's transaction and returns their
// ids; call Deny with them after the commit.
func (s *Service) RevokeUser(ctx context.Context, tx postgres.Querier, userID uuid.UUID, reason string) ([]uuid.UUID, error) {
	return authdb.RevokeUser(ctx, tx, userID, reason)
}

// Deny puts sessions on the denylist until their access tokens expire: in this process at
// once, in Redis and in every API following it. A failure to reach Redis is logged: the
// database check behind the identity cache still ends access elsewhere within IdentityTTL.
func (s *Service) Deny(ctx context.Context, sessionIDs ...uuid.UUID) {
	if len(sessionIDs) == 0 {
		return
	}
	for _, sid := range sessionIDs {
		s.cache.drop(sid)
	}
	// The revocation has committed: a client that hangs up now must not cut its announcement.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), denyTimeout)
	defer cancel()
	if err := s.denied.add(ctx, time.Now().Add(s.Tokens.AccessTTL), sessionIDs...); err != nil {
		s.log.ErrorContext(ctx, "denylist write failed", "err", err, "sessions", len(sessionIDs))
	}
}

// denyTimeout bounds the denylist write of a revocation, whatever became of its request.
const denyTimeout = 5 * time.Second

// Forget drops this process's cached identities of a user whose language changed, so their
// next request here reads it (other API processes within IdentityTTL). A role or password
// change revokes the sessions instead (Deny).
func (s *Service) Forget(userID uuid.UUID) {
	s.cache.dropIf(func(id authdb.Identity) bool { return id.UserID == userID })
}

// Authenticate verifies an access token and returns the caller with the role the database
// holds now, not the one in the token.
func (s *Service) Authenticate(ctx context.Context, token string) (Principal, error) {
	uid, sid, err := s.Tokens.ParseAccess(token)
	if err != nil {
		return Principal{}, ErrInvalidToken
	}
	now := time.Now()
	denied, err := s.denied.has(ctx, sid, now)
	redisOK := err == nil
	if !redisOK {
		s.outage.WarnContext(ctx, "denylist unavailable; checking the session in the database", "err", err)
	}
	if denied {
		return Principal{}, ErrInvalidToken
	}
	if id, ok := s.cache.get(sid, now); ok && redisOK && id.UserID == uid {
		return principal(id, sid), nil
	}
	id, err := authdb.IdentityOf(ctx, s.db, sid, uid)
	if errors.Is(err, authdb.ErrNotFound) {
		return Principal{}, ErrInvalidToken
	}
	if err != nil {
		return Principal{}, err
	}
	s.cache.put(sid, id, now.Add(IdentityTTL), now)
	return principal(id, sid), nil
}

func principal(id authdb.Identity, sid uuid.UUID) Principal {
	return Principal{UserID: id.UserID, SessionID: sid, Role: Role(id.Role), Language: id.Language}
}

func (s *Service) pair(uid, sid uuid.UUID, role Role, lang, refresh string) (TokenPair, error) {
	access, err := s.Tokens.Access(uid, sid, role, lang)
	if err != nil {
		return TokenPair{}, err
	}
	return TokenPair{AccessToken: access, RefreshToken: refresh, ExpiresIn: int(s.Tokens.AccessTTL.Seconds()),
		UserID: uid, Language: lang}, nil
}

// truncate cuts s to at most n bytes of valid UTF-8 (never inside a character): the result is
// stored in a PostgreSQL text column, which refuses invalid UTF-8.
func truncate(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
