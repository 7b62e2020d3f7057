/// The SQL of the long-term store (SPEC §8), for one table. `config/postgres.sql` holds the same
/// schema for operators; a test keeps the two equal.
///
/// Times are the server's (`now()`), so proxies whose clocks disagree still agree on expiry.
/// `record` is the encoded `IdempotencyRecord` of a completed request, NULL while in flight.
struct PostgresSQL: Sendable {
    let table: String

    /// The columns a usable table has, and their `information_schema` types.
    static let columns: [(name: String, type: String)] = [
        ("record_key", "text"), ("owner", "bytea"), ("fingerprint", "bytea"), ("record", "bytea"),
        ("expires_at", "timestamp with time zone"),
    ]

    /// The schema, in two statements (the extended protocol takes one at a time).
    var createTable: String {
        """
        CREATE TABLE IF NOT EXISTS \(table) (
            record_key  text        PRIMARY KEY,
            owner       bytea       NOT NULL,
            fingerprint bytea       NOT NULL,
            record      bytea,
            expires_at  timestamptz NOT NULL
        )
        """
    }

    var createIndex: String { "CREATE INDEX IF NOT EXISTS \(table)_expires_at ON \(table) (expires_at)" }

    /// $1 key, $2 owner, $3 fingerprint, $4 lock_ttl in ms. One statement that claims the key
    /// when nothing live is there (a row whose `expires_at` passed is taken over, so an expired
    /// record is never replayed) and otherwise leaves the row as it is and returns it: the
    /// returned owner is ours exactly when the claim is. The row is locked and read at its
    /// latest version, so two proxies claiming at once cannot both win.
    var claim: String {
        """
        INSERT INTO \(table) AS r (record_key, owner, fingerprint, record, expires_at)
        VALUES ($1::text, $2::bytea, $3::bytea, NULL, now() + $4::int8 * interval '1 millisecond')
        ON CONFLICT (record_key) DO UPDATE SET
            owner = CASE WHEN r.expires_at <= now() THEN excluded.owner ELSE r.owner END,
            fingerprint = CASE WHEN r.expires_at <= now() THEN excluded.fingerprint ELSE r.fingerprint END,
            record = CASE WHEN r.expires_at <= now() THEN NULL ELSE r.record END,
            expires_at = CASE WHEN r.expires_at <= now() THEN excluded.expires_at ELSE r.expires_at END
        RETURNING owner, fingerprint, record, (extract(epoch FROM expires_at - now()) * 1000)::int8
        """
    }

    /// $1 key, $2 owner, $3 fingerprint, $4 record, $5 retention in ms. Owner-checked: a row
    /// that another request took over is left alone (no row returned); a row the sweeper
    /// deleted after our claim expired is written again, as Redis's script does.
    var complete: String {
        """
        INSERT INTO \(table) AS r (record_key, owner, fingerprint, record, expires_at)
        VALUES ($1::text, $2::bytea, $3::bytea, $4::bytea, now() + $5::int8 * interval '1 millisecond')
        ON CONFLICT (record_key) DO UPDATE SET record = excluded.record, expires_at = excluded.expires_at
            WHERE r.owner = excluded.owner
        RETURNING 1
        """
    }

    /// $1 key, $2 owner. Owner-checked, and only an in-flight claim.
    var release: String {
        "DELETE FROM \(table) WHERE record_key = $1::text AND owner = $2::bytea AND record IS NULL RETURNING 1"
    }

    /// $1 batch size. Deletes up to a batch of expired rows, oldest first, if this session gets
    /// the table's sweep lock (a transaction-scoped advisory lock: one proxy of a fleet at a
    /// time, released when the statement ends); rows a claim is taking over are skipped.
    var sweep: String {
        """
        WITH turn AS (SELECT pg_try_advisory_xact_lock(\(Self.sweepLockClass), hashtext('\(table)')) AS ours)
        DELETE FROM \(table) WHERE record_key IN (
            SELECT record_key FROM \(table)
            WHERE (SELECT ours FROM turn) AND expires_at <= now()
            ORDER BY expires_at LIMIT $1::int8
            FOR UPDATE SKIP LOCKED)
        RETURNING 1
        """
    }

    /// The first key of the sweep's advisory lock: "idem" in ASCII, so that it does not
    /// collide with an application's own locks on the table's hash.
    static let sweepLockClass: Int32 = 0x6964_656D

    /// Selects the columns of the table in the session's schema.
    var columnsQuery: String {
        "SELECT column_name::text, data_type::text FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = '\(table)'"
    }
}
