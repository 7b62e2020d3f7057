-- pgbench script: the two statements a first-time request with postgres_url costs PostgreSQL,
-- as Sources/IdempotencyProxy/LongTerm/PostgresSQL.swift writes them (claim, then complete),
-- each in a transaction of its own, for a fresh key; the record is about as large as the
-- benchmark's stored response (the claim's deadline, a parameter in the proxy, is 2 s ahead).
-- scripts/bench runs it with -M prepared (as the proxy sends them to a direct server) and with
-- -M extended (unnamed, as the proxy sends them behind a transaction pooler).
\set n random(1, 2000000000)
INSERT INTO idempotency_records AS r (record_key, owner, fingerprint, record, expires_at, sweep_after)
VALUES ('pgbench:' || :client_id || ':' || :n, decode(md5(:n::text), 'hex'), sha256(:n::text::bytea), NULL,
    CASE WHEN clock_timestamp() <= to_timestamp((extract(epoch FROM now()) * 1000 + 2000)::int8 / 1000.0)
        THEN now() + 60000 * interval '1 millisecond' ELSE 'epoch'::timestamptz END,
    now() + (60000 + 2592000000) * interval '1 millisecond')
ON CONFLICT (record_key) DO UPDATE SET
    owner = CASE WHEN r.expires_at <= now() THEN excluded.owner ELSE r.owner END,
    fingerprint = CASE WHEN r.expires_at <= now() THEN excluded.fingerprint ELSE r.fingerprint END,
    record = CASE WHEN r.expires_at <= now() THEN NULL ELSE r.record END,
    expires_at = CASE WHEN r.expires_at > now() THEN r.expires_at
        WHEN clock_timestamp() <= to_timestamp((extract(epoch FROM now()) * 1000 + 2000)::int8 / 1000.0) THEN excluded.expires_at
        ELSE 'epoch'::timestamptz END,
    sweep_after = CASE WHEN r.expires_at <= now() OR r.owner = excluded.owner THEN excluded.sweep_after ELSE r.sweep_after END
RETURNING owner, fingerprint, record, (extract(epoch FROM expires_at - now()) * 1000)::int8;
INSERT INTO idempotency_records AS r (record_key, owner, fingerprint, record, expires_at, sweep_after)
VALUES ('pgbench:' || :client_id || ':' || :n, decode(md5(:n::text), 'hex'), sha256(:n::text::bytea), decode(repeat('ab', 200), 'hex'),
    now() + 2592000000 * interval '1 millisecond', now() + 2592000000 * interval '1 millisecond')
ON CONFLICT (record_key) DO UPDATE SET
    owner = excluded.owner, fingerprint = excluded.fingerprint, record = excluded.record, expires_at = excluded.expires_at,
    sweep_after = greatest(r.sweep_after, excluded.sweep_after)
    WHERE r.owner = excluded.owner OR r.expires_at <= now()
RETURNING 1;
