import IdempotencyCore

/// The SQL of the long-term store (docs/behaviour.md §3, long-term store), for one table. `config/postgres.sql` holds the same
/// schema for operators (a test makes a table from it and runs the proxy on it).
///
/// Times are the server's (`now()`), so proxies whose clocks disagree still agree on expiry.
/// `record` is the encoded `IdempotencyRecord` of a completed request, NULL while in flight.
struct PostgresSQL: Sendable {
    /// A lower-case identifier (the configuration allows no other).
    let table: String
    /// `postgres_synchronous_commit`.
    var synchronousCommit = true
    /// The table has a `sweep_after` column and a valid index on it, as the tables this version
    /// creates. A table made before has neither, and its index on `expires_at`, which every
    /// completion changes; the statements for it (and for one halfway through its upgrade)
    /// leave `sweep_after` out (`config/postgres.sql` says how to upgrade it).
    var hasSweepAfter = true

    /// Quoted, so that a name such as `order` is a table, not a keyword.
    private var name: String { "\"\(table)\"" }

    /// With `postgres_synchronous_commit = false`, a one-row source the completion statements
    /// join: `synchronous_commit` set for their own transaction only (as `SET LOCAL` would,
    /// which needs a transaction block), read by the server when it commits. A session setting
    /// or a startup parameter would not do: a transaction pooler runs the next statement on
    /// another server connection, or refuses the parameter. Claims stay synchronous: a claim
    /// lost in a crash would find the request's completion no row to write, and so withdraw
    /// its record from Redis too.
    private var commitMode: String? {
        synchronousCommit ? nil : "(SELECT set_config('synchronous_commit', 'off', true)) AS commit_mode"
    }

    /// The columns every usable table has, and their `format_type` types.
    static let columns: [(name: String, type: String)] = [
        ("record_key", "text"), ("owner", "bytea"), ("fingerprint", "bytea"), ("record", "bytea"),
        ("expires_at", "timestamp with time zone"),
    ]

    /// `sweep_after`: when the sweep may delete the row, once it has expired too. Fixed when a
    /// claim writes the row (the end of its lock and of the record's retention after it), so
    /// that the completion, which changes no indexed column, is a HOT update: written in place
    /// beside the row, in the room the fillfactor leaves, with no new index entry
    /// (docs/performance.md, "A completion as a HOT update"). The default lets a proxy of an
    /// earlier version write to the table: its rows are swept once they expire.
    static let sweepAfterColumn = (name: "sweep_after", type: "timestamp with time zone")

    /// Plain `CREATE TABLE`: made in one transaction with its index, so that an index is never
    /// built on a table another process made meanwhile (that one fails, and is found as it is).
    var createTable: String {
        """
        CREATE TABLE \(name) (
            record_key  text        PRIMARY KEY,
            owner       bytea       NOT NULL,
            fingerprint bytea       NOT NULL,
            record      bytea,
            expires_at  timestamptz NOT NULL,
            sweep_after timestamptz NOT NULL DEFAULT 'epoch'
        ) WITH (fillfactor = 70)
        """
    }

    /// The column the sweep looks rows up by.
    var sweepColumn: String { hasSweepAfter ? "sweep_after" : "expires_at" }

    var createIndex: String { "CREATE INDEX IF NOT EXISTS \"\(table)_sweep_after\" ON \(name) (sweep_after)" }

    /// Whether the table exists, in the session's search path (as the statements find it).
    var tableExists: String { "SELECT to_regclass('\(name)') IS NOT NULL" }

    /// The table's whole-table indexes: the column each leads with, its name, and whether it is
    /// valid (one a failed `CREATE INDEX CONCURRENTLY` left is not, and is never used). The
    /// sweep needs a valid one on `sweepColumn` not to scan; one on `expires_at` beside
    /// `sweep_after` makes no completion a HOT update.
    var indexesQuery: String {
        """
        SELECT a.attname::text, i.indexrelid::regclass::text, i.indisvalid FROM pg_index i
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
        WHERE i.indrelid = to_regclass('\(name)') AND i.indpred IS NULL
        """
    }

    /// The columns of the table the statements find, with their types as `columns` names them.
    var columnsQuery: String {
        """
        SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute
        WHERE attrelid = to_regclass('\(name)') AND attnum > 0 AND NOT attisdropped
        """
    }

    /// A batch of claims (`GroupCommitQueue`), one row per key, as arrays of the same length:
    /// $1 keys, $2 owners, $3 fingerprints, $4 lock_ttls in ms, $5 the claimers' deadlines in ms
    /// since the epoch, $6 retentions in ms (for `sweep_after`). One statement that claims each
    /// key when nothing live is there (a row whose `expires_at` passed is taken over, so an
    /// expired record is never replayed) and
    /// otherwise leaves the row as it is and returns it: the returned owner is ours exactly
    /// when the claim is. Each row is locked and read at its latest version, so two proxies
    /// claiming at once cannot both win; the keys are written in byte order, so two batches
    /// cannot deadlock.
    ///
    /// Past its deadline (`clock_timestamp()`, read once when the row is proposed, in a subquery
    /// kept apart by `OFFSET 0` so that its two uses agree, and again once an expired row's lock
    /// is held) a claim is written already expired: it holds nothing, and the returned expiry
    /// (not in the future) says it came late. The claimer has given up, and a live claim nobody
    /// waits for would hold the key until lock_ttl. A live row is returned whatever the time, so
    /// a late retry still meets it. Our own live in-flight claim (an
    /// earlier try whose answer never came) is renewed for lock_ttl when in time, so that the
    /// lock runs from this claim, as a fresh one would.
    ///
    /// A tombstone (a claim the records API deleted while in flight: another owner, no
    /// fingerprint) is taken over like an expired row.
    ///
    /// `sweep_after` is the end of the lock and of the retention after it, so that a completion
    /// within the lock leaves it as it is; a claim that holds nothing may be swept at once. A row
    /// taken over gets the new claim's; our own claim again keeps the later of the two.
    var claim: String {
        let deadline = Self.deadline(Self.ofExcluded("$5::int8[]"))
        let vacant = "(r.expires_at <= now() OR length(r.fingerprint) = 0)"
        let sweepAfterUpdate = """
            sweep_after = CASE WHEN \(vacant) THEN excluded.sweep_after
                    WHEN r.owner = excluded.owner THEN greatest(r.sweep_after, excluded.sweep_after) ELSE r.sweep_after END
            """
        return """
            INSERT INTO \(name) AS r (record_key, owner, fingerprint, record, expires_at\(sweepAfter("sweep_after")))
            SELECT u.k, u.o, u.f, NULL,
                CASE WHEN u.in_time THEN now() + u.ttl * interval '1 millisecond' ELSE \(Self.expired) END\(
                    sweepAfter("CASE WHEN u.in_time THEN now() + (u.ttl + u.ret) * interval '1 millisecond' ELSE \(Self.expired) END"))
            FROM (
                SELECT p.*, clock_timestamp() <= \(Self.deadline("p.d")) AS in_time
                FROM unnest($1::text[], $2::bytea[], $3::bytea[], $4::int8[], $5::int8[], $6::int8[]) AS p(k, o, f, ttl, d, ret)
                OFFSET 0) AS u
            ORDER BY u.k COLLATE "C"
            ON CONFLICT (record_key) DO UPDATE SET
                owner = CASE WHEN \(vacant) THEN excluded.owner ELSE r.owner END,
                fingerprint = CASE WHEN \(vacant) THEN excluded.fingerprint ELSE r.fingerprint END,
                record = CASE WHEN \(vacant) THEN NULL ELSE r.record END,
                expires_at = CASE
                    WHEN NOT \(vacant) AND (r.owner <> excluded.owner OR r.record IS NOT NULL) THEN r.expires_at
                    WHEN clock_timestamp() <= \(deadline) THEN excluded.expires_at
                    WHEN NOT \(vacant) THEN r.expires_at
                    ELSE \(Self.expired) END\(
                    sweepAfter(sweepAfterUpdate))
            RETURNING record_key, owner, fingerprint, record, (extract(epoch FROM expires_at - now()) * 1000)::int8
            """
    }

    /// The element of a batch's parameter array that belongs to the row being written over,
    /// by its key's place in $1: a built-in function call, where a subquery would build a table
    /// of the parameters for every row.
    private static func ofExcluded(_ array: String) -> String { "(\(array))[array_position($1::text[], excluded.record_key)]" }

    /// `", " + fragment` where the table has `sweep_after`, else nothing.
    private func sweepAfter(_ fragment: String) -> String { hasSweepAfter ? ", " + fragment : "" }

    /// A deadline parameter (ms since the epoch) as a timestamp.
    private static func deadline(_ parameter: String) -> String { "to_timestamp(\(parameter)::int8 / 1000.0)" }

    /// The expiry of a claim that holds nothing: long past, finite (so that the remaining
    /// time can still be computed), and first for the sweep.
    private static let expired = "'epoch'::timestamptz"

    /// The owner of the completion's tombstone: of an owner's length, so that it passes what
    /// the table may check of owners, and no claim's (whose tokens count up from a random prefix).
    private static let noOwner = "decode('\(String(repeating: "00", count: IdempotencyRecord.ownerLength))', 'hex')"

    /// How long after a claim's deadline a withdrawal waits, for a claim that read its
    /// deadline just in time to be committed.
    static let withdrawMargin = "interval '1 second'"

    /// A batch of completions, the usual case, as arrays: $1 keys, $2 owners, $3 fingerprints, $4
    /// records, $5 retentions in ms. Each row still held by its claim's owner gets its record;
    /// the keys returned are stored, and any other (a claim that expired and was taken over, or
    /// swept) goes to `complete` alone, whose owner check and lock rules decide.
    ///
    /// Written as an upsert, like the claim, so that the rows are found through the primary key
    /// by the conflict itself, never by a scan the planner chooses: a plan cached while the
    /// table was small would scan it whole for every batch once it has grown, and a plan made
    /// anew for each batch costs the server more than the write. The rows are written in byte
    /// order, as the claim writes them, so claims and completions cannot deadlock. A key with no
    /// row gets an expired tombstone (an owner of zeros, no fingerprint), which holds nothing
    /// and answers every statement as no row would; the sweep deletes it.
    ///
    /// A completion within the claim's lock leaves `sweep_after` as it is, and with it every
    /// indexed column: the update is HOT.
    var completeOwned: String {
        let expiry = "now() + \(Self.ofExcluded("$5::int8[]")) * interval '1 millisecond'"
        return """
            WITH written AS (
                INSERT INTO \(name) AS r (record_key, owner, fingerprint, record, expires_at\(sweepAfter("sweep_after")))
                SELECT u.k, \(Self.noOwner), ''::bytea, NULL, \(Self.expired)\(sweepAfter(Self.expired))
                FROM unnest($1::text[]) AS u(k)\(commitMode.map { ", " + $0 } ?? "")
                ORDER BY u.k COLLATE "C"
                ON CONFLICT (record_key) DO UPDATE
                    SET fingerprint = \(Self.ofExcluded("$3::bytea[]")), record = \(Self.ofExcluded("$4::bytea[]")),
                        expires_at = \(expiry)\(sweepAfter("sweep_after = greatest(r.sweep_after, \(expiry))"))
                    WHERE r.owner = \(Self.ofExcluded("$2::bytea[]"))
                RETURNING r.record_key, length(r.fingerprint) > 0 AS stored)
            SELECT record_key FROM written WHERE stored
            """
    }

    /// $1 key, $2 owner, $3 fingerprint, $4 record, $5 retention in ms, $6 the latest our
    /// claim's lock can end (ms since the epoch). Owner-checked: a live row of another request
    /// is left alone (no row returned); an expired one, or none (the sweep deleted our expired
    /// claim), is written over, as a claim would take it over and as Redis's script does, but
    /// only once our own lock has ended: before, our claim was replaced or removed on purpose
    /// (a forced delete, and a retry that took the key and gave it back), and a deleted record
    /// must not come back. Before then only a row of ours lets the insert go ahead, so that a
    /// tombstone the sweep deletes in the meantime leaves nothing to write.
    var complete: String {
        let lockEnded = "clock_timestamp() > \(Self.deadline("$6"))"
        let expiry = "now() + $5::int8 * interval '1 millisecond'"
        return """
            INSERT INTO \(name) AS r (record_key, owner, fingerprint, record, expires_at\(sweepAfter("sweep_after")))
            SELECT $1::text, $2::bytea, $3::bytea, $4::bytea, \(expiry)\(sweepAfter(expiry))\(commitMode.map { " FROM " + $0 } ?? "")
            WHERE \(lockEnded) OR EXISTS (SELECT 1 FROM \(name) WHERE record_key = $1::text AND owner = $2::bytea)
            ON CONFLICT (record_key) DO UPDATE SET
                owner = excluded.owner, fingerprint = excluded.fingerprint, record = excluded.record, expires_at = excluded.expires_at\(
                    sweepAfter("sweep_after = greatest(r.sweep_after, excluded.sweep_after)"))
                WHERE r.owner = excluded.owner OR (r.expires_at <= now() AND \(lockEnded))
            RETURNING 1
            """
    }

    /// $1 key, $2 owner. Owner-checked, and only an in-flight claim.
    var release: String {
        "DELETE FROM \(name) WHERE record_key = $1::text AND owner = $2::bytea AND record IS NULL RETURNING 1"
    }

    /// $1 key, $2 owner, $3 the claim's deadline in ms since the epoch. The withdrawal of a
    /// claim whose answer never came, once the server's clock is past its deadline (and the
    /// margin): from then on the claim has been written or never will be. Our in-flight claim
    /// is expired, not deleted: written as an upsert, the statement waits for a claim that is
    /// still being committed (a delete would not see it), and a key with no row gets an expired
    /// one of ours, which the next claim takes over and the sweep deletes. One row: whether the
    /// deadline had passed (nothing is done before), and whether a claim of ours was expired.
    var withdrawUnanswered: String {
        // The clock is read once (a CTE named twice is computed once), so that the answer and
        // the write agree on whether the deadline had passed.
        """
        WITH due AS (SELECT clock_timestamp() > \(Self.deadline("$3")) + \(Self.withdrawMargin) AS past),
        gone AS (
            INSERT INTO \(name) AS r (record_key, owner, fingerprint, record, expires_at\(sweepAfter("sweep_after")))
            SELECT $1::text, $2::bytea, ''::bytea, NULL, \(Self.expired)\(sweepAfter(Self.expired)) WHERE (SELECT past FROM due)
            ON CONFLICT (record_key) DO UPDATE SET expires_at = \(Self.expired)\(sweepAfter("sweep_after = \(Self.expired)"))
                WHERE r.owner = excluded.owner AND r.record IS NULL AND r.expires_at > now()
            RETURNING length(r.fingerprint) > 0 AS expired_ours)
        SELECT (SELECT past FROM due), coalesce((SELECT bool_or(expired_ours) FROM gone), false)
        """
    }

    /// $1 key. The live record for the records API, if any (a tombstone is none): owner,
    /// fingerprint, record (NULL in flight), and its expiry in ms since the epoch as text.
    var inspect: String {
        """
        SELECT owner, fingerprint, record, (floor(extract(epoch FROM expires_at) * 1000))::int8::text FROM \(name)
        WHERE record_key = $1::text AND expires_at > now() AND length(fingerprint) > 0
        """
    }

    /// $1 key, $2 the tombstone's owner, $3 whether to delete an in-flight claim. The records
    /// API's delete, in one statement on the row locked: a completed record is deleted; a live
    /// in-flight claim is left alone unless $3, and then becomes a tombstone (another owner, no
    /// fingerprint, the claim's expiry), so that the running request's owner-checked
    /// completion stores nothing (an expired row or none it would write over) while the next
    /// claim takes the key. One row: `absent`, `in_flight` (left alone), `completed` (deleted)
    /// or `in_flight_forced` (made a tombstone).
    var forget: String {
        """
        WITH current AS (
            SELECT CASE WHEN expires_at <= now() OR length(fingerprint) = 0 THEN 'absent'
                WHEN record IS NULL THEN 'in_flight' ELSE 'completed' END AS state
            FROM \(name) WHERE record_key = $1::text FOR UPDATE),
        deleted AS (
            DELETE FROM \(name) WHERE record_key = $1::text AND (SELECT state FROM current) = 'completed' RETURNING 1),
        buried AS (
            UPDATE \(name) SET owner = $2::bytea, fingerprint = ''::bytea\(sweepAfter("sweep_after = expires_at"))
            WHERE record_key = $1::text AND $3::bool AND (SELECT state FROM current) = 'in_flight' RETURNING 1)
        SELECT CASE WHEN EXISTS (SELECT 1 FROM buried) THEN 'in_flight_forced'
            ELSE coalesce((SELECT state FROM current), 'absent') END
        """
    }

    /// $1 batch size. Deletes up to a batch of expired rows, oldest first, if this session gets
    /// the table's sweep lock (a transaction-scoped advisory lock, taken once per statement:
    /// one proxy of a fleet at a time, released when the statement ends); rows a claim is
    /// taking over are skipped. The keys are collected first (an index scan on `sweepColumn`),
    /// then deleted by primary key, so that no plan joins the whole table. With `sweep_after`, a
    /// row is deleted once past both: a claim that never completed stays its retention longer.
    var sweep: String {
        """
        DELETE FROM \(name) WHERE record_key = ANY (ARRAY(
            SELECT record_key FROM \(name)
            WHERE (SELECT pg_try_advisory_xact_lock(\(Self.sweepLockClass), hashtext('\(table)')))
                AND \(hasSweepAfter ? "sweep_after <= now() AND " : "")expires_at <= now()
            ORDER BY \(sweepColumn) LIMIT $1::int8
            FOR UPDATE SKIP LOCKED))
        RETURNING 1
        """
    }

    /// The first key of the sweep's advisory lock: "idem" in ASCII, so that it does not
    /// collide with an application's own locks on the table's hash.
    static let sweepLockClass: Int32 = 0x6964_656D
}
