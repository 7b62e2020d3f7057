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
--              that a completion changes no indexed column and is written in place (a HOT
--              update, in the room the fillfactor leaves), with no new index entry
--
-- A table made by an earlier version has no sweep_after, and an index on expires_at. The proxy
-- uses it as it is (and says so at start). To upgrade it with the fleet running:
--
--   ALTER TABLE idempotency_records ADD COLUMN sweep_after timestamptz NOT NULL DEFAULT 'epoch';
--   UPDATE idempotency_records SET sweep_after = expires_at WHERE sweep_after < expires_at;
--   CREATE INDEX CONCURRENTLY idempotency_records_sweep_after ON idempotency_records (sweep_after);
--   ALTER TABLE idempotency_records SET (fillfactor = 70);
--
-- then restart the proxies on this version, and once none of an earlier version is left, run
-- the UPDATE again (for the rows they wrote meanwhile) and drop the old index:
--
--   DROP INDEX CONCURRENTLY idempotency_records_expires_at;
--
-- The default lets proxies of an earlier version write to the table: their rows are swept once
-- expired, but the sweep reads past every one still live, which the UPDATE spares it. On a
-- large table, run the UPDATE in batches of keys. The fillfactor applies to pages written
-- from then on.

CREATE TABLE IF NOT EXISTS idempotency_records (
    record_key  text        PRIMARY KEY,
    owner       bytea       NOT NULL,
    fingerprint bytea       NOT NULL,
    record      bytea,
    expires_at  timestamptz NOT NULL,
    sweep_after timestamptz NOT NULL DEFAULT 'epoch'
) WITH (fillfactor = 70);
CREATE INDEX IF NOT EXISTS idempotency_records_sweep_after ON idempotency_records (sweep_after);
