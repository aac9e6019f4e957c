-- A refresh sent with an Idempotency-Key leaves on its session what a retry of it needs, in the
-- rotation's own UPDATE: the hash of the refresh token it took, the hash of its key, and its
-- answer sealed under a key only that token derives (the answer carries tokens; the database
-- never holds one in the clear). A later rotation without a key clears them.
ALTER TABLE sessions
    ADD COLUMN replay_token_hash bytea,
    ADD COLUMN replay_key_hash   bytea,
    ADD COLUMN replay_answer     bytea;
