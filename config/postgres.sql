-- The long-term store's table (docs/behaviour.md, "With a long-term store"), for operators
-- who create it themselves. idemproxy creates the same table and index at start when `postgres_table` does not exist; rename
-- both if you set another `postgres_table`. The proxy's role needs SELECT, INSERT, UPDATE
-- and DELETE on it.
--
-- record_key   the record's key: key_prefix, a hash of the scope headers, and the key
-- owner        the claim's owner token (owner-checked settling)
-- fingerprint  SHA-256 of method, path+query and body; empty for a tombstone: a record
--              deleted by the records API while its request was in flight, or a key a
--              completion found without a row (an owner of zeros, expired at once)
-- record       the completed record (status, headers, body, when it completed), NULL while in flight
-- expires_at   end of the claim's lock_ttl, or of the record's retention; expired rows are
--              never replayed and are deleted in the background

CREATE TABLE IF NOT EXISTS idempotency_records (
    record_key  text        PRIMARY KEY,
    owner       bytea       NOT NULL,
    fingerprint bytea       NOT NULL,
    record      bytea,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS idempotency_records_expires_at ON idempotency_records (expires_at);
