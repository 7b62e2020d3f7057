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
-- sweep_after  when the background sweep may delete the row, once expires_at has passed too:
--              set by the claim to the end of its lock_ttl and of the retention after it, so
--              that a completion within the lock changes no indexed column and is written in
--              place (a HOT update, in the room the fillfactor leaves), with no new index entry
--
-- A table made by an earlier version has no sweep_after, and an index on expires_at. The proxy
-- uses it as it is, with the statements of that version, and says so at start; so it does
-- with a table that has the column but no valid index on it yet. To upgrade the table with
-- the fleet running (PostgreSQL 11 or later adds the column without rewriting the table):
--
--   SET lock_timeout = '5s';
--   ALTER TABLE idempotency_records ADD COLUMN sweep_after timestamptz NOT NULL DEFAULT 'epoch';
--   UPDATE idempotency_records SET sweep_after = expires_at WHERE record_key IN (SELECT record_key FROM idempotency_records WHERE sweep_after < expires_at LIMIT 10000 FOR UPDATE SKIP LOCKED);
--   RESET lock_timeout;
--   CREATE INDEX CONCURRENTLY idempotency_records_sweep_after ON idempotency_records (sweep_after);
--   ALTER TABLE idempotency_records SET (fillfactor = 70);
--
-- The ALTER waits at most lock_timeout for the table (run it again if it times out), so that
-- it never holds the proxies' statements queued behind a long transaction; the index is built
-- without it, since CREATE INDEX CONCURRENTLY waits for every older transaction. Run the
-- UPDATE again until it updates fewer rows than its batch: batches keep row locks short, and
-- SKIP LOCKED leaves the rows a proxy holds (for the next run), so that it never waits on, nor
-- deadlocks with, the proxies. CREATE INDEX CONCURRENTLY must run outside a transaction
-- block; if it fails, it leaves an invalid index (which the proxy names at start): drop it
-- with DROP INDEX CONCURRENTLY and build it again. Then restart the proxies on this version.
-- Once none of an earlier version is left, run the UPDATE once more (for the rows those wrote
-- meanwhile, with the column's default, which lets them write at all), then:
--
--   DROP INDEX CONCURRENTLY idempotency_records_expires_at;
--   ANALYZE idempotency_records;
--
-- Until then the sweep reads past every live row an earlier version wrote. The fillfactor
-- applies to pages written from then on. A proxy of an earlier version started on a table
-- without an index on expires_at builds one, which holds the table's writes while it does
-- and makes completions write index entries again.

CREATE TABLE IF NOT EXISTS idempotency_records (
    record_key  text        PRIMARY KEY,
    owner       bytea       NOT NULL,
    fingerprint bytea       NOT NULL,
    record      bytea,
    expires_at  timestamptz NOT NULL,
    sweep_after timestamptz NOT NULL DEFAULT 'epoch'
) WITH (fillfactor = 70);
CREATE INDEX IF NOT EXISTS idempotency_records_sweep_after ON idempotency_records (sweep_after);
