ALTER TABLE sessions
    DROP COLUMN replay_token_hash,
    DROP COLUMN replay_key_hash,
    DROP COLUMN replay_answer;
