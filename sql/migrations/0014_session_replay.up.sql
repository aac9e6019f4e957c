-- A refresh sent with an Idempotency-Key leaves on its session what a retry of it needs, in the
-- rotation's own UPDATE: the hash of the refresh token it took, the hash of its key, and its
-- answer sealed under a key derived from the refresh secret and that token (the answer carries
-- tokens; the database never holds one in the clear). The next rotation replaces or clears
-- them, a revocation clears them. Migrate up before the programs that read them start.
ALTER TABLE sessions
    ADD COLUMN replay_token_hash bytea,
    ADD COLUMN replay_key_hash   bytea,
    ADD COLUMN replay_answer     bytea;
