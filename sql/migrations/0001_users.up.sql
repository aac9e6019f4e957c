CREATE TABLE users (
    id                 uuid PRIMARY KEY,
    name               text        NOT NULL CHECK (char_length(name) BETWEEN 2 AND 100),
    email              text        NOT NULL CHECK (char_length(email) BETWEEN 3 AND 254),
    password_hash      text        NOT NULL,
    role               text        NOT NULL CHECK (role IN ('superadmin', 'admin', 'shipper', 'delivery', 'financial', 'user')),
    language           text        NOT NULL DEFAULT 'en' CHECK (language IN ('en', 'pt-BR')),
    stripe_customer_id text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    deleted_at         timestamptz
);

-- An email is unique among live users; a deleted user's email can be registered again.
CREATE UNIQUE INDEX users_email_live_key ON users (lower(email)) WHERE deleted_at IS NULL;
CREATE UNIQUE INDEX users_stripe_customer_key ON users (stripe_customer_id) WHERE stripe_customer_id IS NOT NULL;
CREATE INDEX users_keyset_idx ON users (created_at DESC, id DESC) WHERE deleted_at IS NULL;

CREATE TABLE addresses (
    user_id     uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    line1       text        NOT NULL CHECK (char_length(line1) BETWEEN 1 AND 200),
    line2       text        CHECK (char_length(line2) <= 200),
    city        text        NOT NULL CHECK (char_length(city) BETWEEN 1 AND 100),
    state       text        NOT NULL CHECK (char_length(state) BETWEEN 1 AND 100),
    postal_code text        NOT NULL CHECK (char_length(postal_code) BETWEEN 1 AND 20),
    country     text        NOT NULL CHECK (country ~ '^[A-Z]{2}$'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- A session binds an access token (its jti) and the current refresh token (by hash).
CREATE TABLE sessions (
    id                 uuid PRIMARY KEY,
    user_id            uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    refresh_token_hash bytea       NOT NULL,
    expires_at         timestamptz NOT NULL,
    revoked_at         timestamptz,
    revoke_reason      text,
    user_agent         text        NOT NULL DEFAULT '',
    ip                 text        NOT NULL DEFAULT '',
    created_at         timestamptz NOT NULL DEFAULT now(),
    refreshed_at       timestamptz
);

CREATE INDEX sessions_user_live_idx ON sessions (user_id) WHERE revoked_at IS NULL;
CREATE INDEX sessions_expires_idx ON sessions (expires_at);
