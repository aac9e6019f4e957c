CREATE TABLE items (
    id               uuid PRIMARY KEY,
    name             text        NOT NULL CHECK (char_length(name) BETWEEN 2 AND 200),
    description      text        NOT NULL CHECK (char_length(description) BETWEEN 1 AND 5000),
    price            bigint      NOT NULL CHECK (price > 0),
    currency         text        NOT NULL CHECK (currency IN ('usd', 'brl', 'eur')),
    stock            integer     NOT NULL CHECK (stock >= 0),
    price_payment_id text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    deleted_at       timestamptz
);

CREATE INDEX items_keyset_idx ON items (created_at DESC, id DESC) WHERE deleted_at IS NULL;
CREATE INDEX items_admin_keyset_idx ON items (created_at DESC, id DESC);
