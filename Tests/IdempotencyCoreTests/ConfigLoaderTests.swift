import Testing

@testable import IdempotencyCore

@Suite struct ConfigLoaderTests {
    private func load(_ text: String, env: [String: String] = [:], sets: [String] = []) -> Result<ProxyConfiguration, ConfigLoader.Findings> {
        var loader = ConfigLoader()
        loader.applyFile(named: "test.conf", contents: text)
        loader.applyEnvironment(env)
        for s in sets { loader.applySet(s) }
        return loader.finish()
    }

    private func errors(_ text: String, env: [String: String] = [:], sets: [String] = []) -> [String] {
        if case .failure(let findings) = load(text, env: env, sets: sets) { return findings.all.map(\.description) }
        return []
    }

    @Test func defaultsMatchTheSpec() throws {
        let c = try load("").get()
        #expect(ConfigLoader.render(c) == """
            listen = 127.0.0.1:8081
            upstream = http://127.0.0.1:8080
            admin_listen = 127.0.0.1:9091
            redis_url = redis://127.0.0.1:6379/0
            redis_cluster = false
            redis_timeout = 1s
            redis_wait_replicas = 0
            key_header = Idempotency-Key
            methods = POST,PATCH
            require_key = false
            max_key_length = 255
            scope_headers = Authorization
            fingerprint = true
            lock_ttl = 60s
            response_ttl = 24h
            inflight_wait = 0s
            release_statuses = 408,425,429,5xx
            max_request_body = 1MiB
            max_stored_response = 1MiB
            on_redis_error = closed
            upstream_timeout = 30s
            shutdown_grace = 10s
            key_prefix = idem:
            replay_header = Idempotent-Replayed
            log_level = info
            tls_cert_file = 
            tls_key_file = 
            upstream_tls_ca_file = 
            upstream_tls_server_name = 
            upstream_tls_cert_file = 
            upstream_tls_key_file = 
            redis_tls_ca_file = 
            redis_tls_cert_file = 
            redis_tls_key_file = 
            postgres_url = 
            postgres_table = idempotency_records
            postgres_timeout = 2s
            postgres_synchronous_commit = true
            retention = 30d
            on_postgres_error = closed
            redis_sentinel = 
            redis_sentinel_password = 
            max_connections = auto
            client_header_timeout = 60s
            client_idle_timeout = 60s
            access_log = protected
            admin_token = 
            """)
    }

    struct ValidCase: CustomTestStringConvertible, Sendable {
        let line: String
        let check: @Sendable (ProxyConfiguration) -> Bool
        var testDescription: String { line }
    }

    @Test(arguments: [
        ValidCase(line: "listen = 0.0.0.0:80", check: { $0.listen == HostPort(host: "0.0.0.0", port: 80) }),
        ValidCase(line: "listen = [::1]:8081", check: { $0.listen == HostPort(host: "::1", port: 8081) }),
        ValidCase(line: "upstream = http://api.internal:9000/v1/", check: { $0.upstream == UpstreamURL(host: "api.internal", port: 9000, basePath: "/v1") }),
        ValidCase(line: "upstream = http://localhost", check: { $0.upstream.port == 80 }),
        ValidCase(line: "upstream = https://api.example/v2", check: {
            $0.upstream == UpstreamURL(host: "api.example", port: 443, basePath: "/v2", tls: true) && $0.upstream.hostHeader == "api.example"
        }),
        ValidCase(line: "response_ttl = 2d", check: { $0.responseTTLMs == 2 * 86_400_000 }),
        ValidCase(line: "admin_listen = off", check: { $0.adminListen == nil }),
        ValidCase(line: "redis_url = redis://app:s%40cret@10.0.0.5:6380/3", check: {
            $0.redisURL == RedisURL(location: .tcp(HostPort(host: "10.0.0.5", port: 6380)), username: "app", password: "s@cret", database: 3)
        }),
        ValidCase(line: "redis_url = redis://:pw@h:1", check: { $0.redisURL.username == nil && $0.redisURL.password == "pw" }),
        ValidCase(line: "redis_url = unix:///run/redis.sock?db=2", check: { $0.redisURL == RedisURL(location: .unix(path: "/run/redis.sock"), database: 2) }),
        ValidCase(line: "redis_url = rediss://:pw@cache.example:6380/1", check: {
            $0.redisURL == RedisURL(location: .tcp(HostPort(host: "cache.example", port: 6380)), password: "pw", database: 1, tls: true)
        }),
        ValidCase(line: "redis_cluster = true\nredis_url = rediss://h1:7000,h2:7001", check: { $0.redisURLs.allSatisfy(\.tls) && $0.redisURLs.count == 2 }),
        ValidCase(line: "redis_timeout = 250ms", check: { $0.redisTimeoutMs == 250 }),
        ValidCase(line: "response_ttl = 2h", check: { $0.responseTTLMs == 7_200_000 }),
        ValidCase(line: "inflight_wait = 5s", check: { $0.inflightWaitMs == 5_000 }),
        ValidCase(line: "methods = post, put ,PATCH", check: { $0.methods == ["POST", "PUT", "PATCH"] }),
        ValidCase(line: "scope_headers =", check: { $0.scopeHeaders.isEmpty }),
        ValidCase(line: "scope_headers = Authorization, X-Tenant", check: { $0.scopeHeaders == ["Authorization", "X-Tenant"] }),
        ValidCase(line: "max_request_body = 64KiB", check: { $0.maxRequestBody == 65_536 }),
        ValidCase(line: "max_stored_response = 100B", check: { $0.maxStoredResponse == 100 }),
        ValidCase(line: "on_redis_error = open", check: { $0.onRedisError == .open }),
        ValidCase(line: "store_5xx = true", check: { $0.releaseStatuses.description == "408,425,429" }),
        ValidCase(line: "store_5xx = false", check: { $0.releaseStatuses == .default }),
        ValidCase(line: "max_connections = 5000", check: { $0.maxConnections == 5_000 }),
        ValidCase(line: "max_connections = auto", check: { $0.maxConnections == nil }),
        ValidCase(line: "client_header_timeout = 10s\nclient_idle_timeout = 75s", check: { $0.clientHeaderTimeoutMs == 10_000 && $0.clientIdleTimeoutMs == 75_000 }),
        ValidCase(line: "release_statuses = 408,425,429,502,503", check: { $0.releaseStatuses.description == "408,425,429,502,503" }),
        ValidCase(line: "release_statuses = 4XX, 599 ,4xx", check: { $0.releaseStatuses.description == "4xx,599" }),
        ValidCase(line: "release_statuses =", check: { $0.releaseStatuses.entries.isEmpty }),
        ValidCase(line: "log_level = debug", check: { $0.logLevel == .debug }),
        ValidCase(line: "   key_header   =   X-Request-Key   ", check: { $0.keyHeader == "X-Request-Key" }),
        ValidCase(line: "postgres_url = postgres://app:s%40cret@db.internal:6432/payments", check: {
            $0.postgresURL == PostgresURL(
                address: HostPort(host: "db.internal", port: 6432), username: "app", password: "s@cret", database: "payments")
        }),
        ValidCase(line: "postgres_url = postgresql://10.0.0.7/idem", check: {
            $0.postgresURL == PostgresURL(address: HostPort(host: "10.0.0.7", port: 5432), username: "postgres", database: "idem")
        }),
        ValidCase(line: "postgres_url = postgres://u@[::1]/d?sslmode=verify-full&sslrootcert=/etc/hostname", check: {
            $0.postgresURL?.address == HostPort(host: "::1", port: 5432) && $0.postgresURL?.sslMode == .verifyFull
                && $0.postgresURL?.sslRootCert == "/etc/hostname"
        }),
        ValidCase(line: "postgres_url =", check: { $0.postgresURL == nil }),
        ValidCase(line: "postgres_table = idem_records_2", check: { $0.postgresTable == "idem_records_2" }),
        ValidCase(line: "postgres_timeout = 500ms", check: { $0.postgresTimeoutMs == 500 }),
        ValidCase(line: "postgres_synchronous_commit = false", check: { !$0.postgresSynchronousCommit }),
        ValidCase(line: "retention = 7d", check: { $0.retentionMs == 7 * 86_400_000 }),
        ValidCase(line: "retention = 24h", check: { $0.retentionMs == 86_400_000 }),
        ValidCase(line: "on_postgres_error = redis", check: { $0.onPostgresError == .redis }),
        ValidCase(line: "response_ttl = 40d", check: { $0.responseTTLMs == 40 * 86_400_000 }),
        ValidCase(line: "redis_cluster = true\nredis_url = redis://h1:7000,h2:7001", check: { $0.redisURLs.count == 2 && $0.redisCluster }),
        ValidCase(
            line: "redis_sentinel = mymaster\nredis_sentinel_password = sp\nredis_url = rediss://u:p@s1:26379,s2:26379,s3:26379/2",
            check: { $0.redisURLs.count == 3 && $0.redisSentinel == "mymaster" && $0.redisSentinelPassword == "sp" && $0.redisDatabase == 2 && $0.redisURLs.allSatisfy(\.tls) }),
        ValidCase(
            line: "redis_cluster = true\nredis_url = redis://u:p@h1:7000,redis://u:p@h2:7001,h3:7002",
            check: { $0.redisURLs.map(\.password) == ["p", "p", nil] }),
    ])
    func acceptsValidLine(_ example: ValidCase) throws {
        let c = try load(example.line).get()
        #expect(example.check(c))
    }

    @Test(arguments: [
        ("frobnicate = 1", "test.conf:1: unknown key \"frobnicate\""),
        ("just words", "test.conf:1: expected key = value, got \"just words\""),
        ("= 5", "test.conf:1: missing key before \"=\""),
        ("lock_ttl = 60", "test.conf:1: lock_ttl: expected a duration such as 250ms, 30s, 5m, 24h or 30d, got \"60\""),
        ("lock_ttl = 0s", "test.conf:1: lock_ttl: must be more than 0, got \"0s\""),
        ("lock_ttl = -5s", "test.conf:1: lock_ttl: expected a duration such as 250ms, 30s, 5m, 24h or 30d, got \"-5s\""),
        ("max_request_body = 1MB", "test.conf:1: max_request_body: expected a size such as 512B, 64KiB or 1MiB, got \"1MB\""),
        ("release_statuses = 429,600", "test.conf:1: release_statuses: expected status codes (100 to 599) and classes (1xx to 5xx), got \"600\""),
        ("release_statuses = 6xx", "test.conf:1: release_statuses: expected status codes (100 to 599) and classes (1xx to 5xx), got \"6xx\""),
        ("release_statuses = 5xx, too many", "test.conf:1: release_statuses: expected status codes (100 to 599) and classes (1xx to 5xx), got \"too many\""),
        ("release_statuses = +42", "test.conf:1: release_statuses: expected status codes (100 to 599) and classes (1xx to 5xx), got \"+42\""),
        ("store_5xx = true\nrelease_statuses = 429", "test.conf:2: store_5xx and release_statuses are both set (the other at test.conf:1); store_5xx = true is the older spelling of release_statuses = 408,425,429: keep one"),
        ("release_statuses = 429\n# x\nstore_5xx = false", "test.conf:3: store_5xx and release_statuses are both set (the other at test.conf:1); store_5xx = true is the older spelling of release_statuses = 408,425,429: keep one"),
        ("max_connections = 0", "test.conf:1: max_connections: expected auto (from the descriptor limit) or a number from 1 to 10000000, got \"0\""),
        ("max_connections = many", "test.conf:1: max_connections: expected auto (from the descriptor limit) or a number from 1 to 10000000, got \"many\""),
        ("client_idle_timeout = 0s", "test.conf:1: client_idle_timeout: must be more than 0, got \"0s\""),
        ("fingerprint = yes", "test.conf:1: fingerprint: expected true or false, got \"yes\""),
        ("listen = localhost", "test.conf:1: listen: expected host:port, got \"localhost\""),
        ("listen = 127.0.0.1:99999", "test.conf:1: listen: port in \"127.0.0.1:99999\" must be a number from 0 to 65535"),
        ("upstream = ftp://x", "test.conf:1: upstream: expected http://host:port or https://host:port, got \"ftp://x\""),
        ("tls_cert_file = /etc/hostname", "test.conf:1: tls_cert_file and tls_key_file are a pair: set both or neither"),
        ("tls_cert_file = /nonexistent.pem\ntls_key_file = /etc/hostname", "test.conf:1: tls_cert_file: /nonexistent.pem cannot be read"),
        ("upstream_tls_ca_file = /etc/hostname", "test.conf:1: upstream_tls_ca_file is set, but upstream is not https://"),
        ("upstream = https://api\nupstream_tls_key_file = /etc/hostname", "test.conf:2: upstream_tls_cert_file and upstream_tls_key_file are a pair: set both or neither"),
        ("upstream = https://api\nupstream_tls_server_name = 10.0.0.9", "test.conf:2: upstream_tls_server_name: upstream_tls_server_name must be a host name, not an address (an https:// upstream given by address is verified against the addresses in its certificate)"),
        ("upstream = https://api\nupstream_tls_server_name = bad name", "test.conf:2: upstream_tls_server_name: invalid host \"bad name\" in \"bad name\": expected a name, an IPv4 address or an [IPv6] address"),
        // Found by the fuzzer: a host that cannot be printed back as a URL.
        ("upstream = http://254.0y can also be set", "test.conf:1: upstream: invalid host \"254.0y can also be set\" in \"http://254.0y can also be set\": expected a name, an IPv4 address or an [IPv6] address"),
        ("listen = a<b:80", "test.conf:1: listen: invalid host \"a<b\" in \"a<b:80\": expected a name, an IPv4 address or an [IPv6] address"),
        ("redis_url = redis://[fe80::z]:6379", "test.conf:1: redis_url: invalid host \"fe80::z\" in \"[fe80::z]:6379\": expected a name, an IPv4 address or an [IPv6] address"),
        ("redis_url = mysql://x", "test.conf:1: redis_url: expected redis://host:port[/db], rediss://host:port[/db] or unix:///path.sock, got \"mysql://x\""),
        ("redis_url = redis://h:1/x", "test.conf:1: redis_url: database in \"redis://h:1/x\" must be a number"),
        ("methods = ,", "test.conf:1: methods: methods must name at least one method"),
        ("methods = PO ST", "test.conf:1: methods: \"PO ST\" is not a valid HTTP method"),
        ("on_redis_error = maybe", "test.conf:1: on_redis_error: expected closed or open, got \"maybe\""),
        ("max_key_length = 0", "test.conf:1: max_key_length: 0 is out of range (1 to 8192)"),
        ("log_level = loud", "test.conf:1: log_level: expected one of trace, debug, info, notice, warning, error, critical, got \"loud\""),
        ("Lock-TTL = 5s", "test.conf:1: unknown key \"Lock-TTL\" (did you mean lock_ttl?)"),
        ("redis_url = redis://a:1,b:2", "test.conf:1: several Redis URLs need redis_cluster = true (seeds) or redis_sentinel (Sentinels)"),
        ("redis_cluster = true\nredis_sentinel = mymaster\nredis_url = redis://a:1,b:2", "test.conf:2: redis_sentinel and redis_cluster = true exclude each other (the other at test.conf:1): a Redis Cluster fails over by itself"),
        ("redis_sentinel = mymaster\nredis_url = unix:///tmp/r.sock", "test.conf:2: with redis_sentinel, redis_url lists the Sentinels as redis://host:port"),
        ("redis_sentinel_password = s3cret", "test.conf:1: redis_sentinel_password is set, but redis_sentinel is not"),
        ("redis_sentinel = my master", "test.conf:1: redis_sentinel: the master's name as the Sentinels know it, printable ASCII without spaces, got \"my master\""),
        ("redis_sentinel = m\nredis_url = redis://:p@a:1,redis://:q@b:2", "test.conf:2: with redis_sentinel, redis_url names the master's user, password and /db once: redis://user:password@s1:26379,s2:26379/db"),
        ("redis_sentinel = m\nredis_url = redis://a:1/2,b:2/3", "test.conf:2: with redis_sentinel, redis_url names the master's user, password and /db once: redis://user:password@s1:26379,s2:26379/db"),
        ("redis_cluster = true\nredis_url = redis://a:1/2,b:2", "test.conf:2: Redis Cluster has only database 0; drop the /db from the seeds"),
        ("redis_cluster = true\nredis_url = unix:///tmp/r.sock", "test.conf:2: Redis Cluster seeds must be redis://host:port"),
        ("redis_cluster = true\nredis_url = redis://u:p@a:1,redis://u:q@b:2", "test.conf:2: Redis Cluster seeds share one user and password (the first seed's open every node); give later seeds the same or none"),
        ("redis_cluster = true\nredis_url = redis://a:1,redis://:p@b:2", "test.conf:2: Redis Cluster seeds share one user and password (the first seed's open every node); give later seeds the same or none"),
        ("lock_ttl = 30s", "test.conf:1: lock_ttl (30s) must exceed upstream_timeout (30s), or a slow upstream could run a request twice"),
        ("redis_tls_ca_file = /etc/hostname", "test.conf:1: redis_tls_ca_file is set, but redis_url is not rediss://"),
        ("redis_url = rediss://h:1\nredis_tls_ca_file = /nonexistent.pem", "test.conf:2: redis_tls_ca_file: /nonexistent.pem cannot be read"),
        ("redis_url = rediss://h:1\nredis_tls_cert_file = /etc/hostname", "test.conf:2: redis_tls_cert_file and redis_tls_key_file are a pair: set both or neither"),
        ("redis_cluster = true\nredis_url = rediss://a:1,redis://b:2", "test.conf:2: redis_url: every Redis Cluster seed is redis:// or every one is rediss://, got \"redis://b:2\""),
        ("postgres_url = mysql://db/x", "test.conf:1: postgres_url: expected postgres://[user[:password]@]host[:port]/dbname, got \"mysql://db/x\""),
        ("postgres_url = postgres://u:secret@db", "test.conf:1: postgres_url: missing /dbname in \"postgres://u:***@db\""),
        ("postgres_url = postgres://db:0/x", "test.conf:1: postgres_url: port 0 is not a PostgreSQL port in \"postgres://db:0/x\""),
        ("postgres_url = postgres://db/x?sslmode=prefer", "test.conf:1: postgres_url: sslmode must be disable, require or verify-full, got \"prefer\""),
        ("postgres_url = postgres://db/x?sslrootcert=/ca.pem", "test.conf:1: postgres_url: sslrootcert is used only with sslmode=verify-full"),
        ("postgres_url = postgres://db/x?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem", "test.conf:1: postgres_url: sslrootcert /nonexistent/ca.pem cannot be read"),
        ("postgres_url = postgres://db/x?connect_timeout=3", "test.conf:1: postgres_url: unknown parameter \"connect_timeout\" in postgres_url (sslmode and sslrootcert are known)"),
        ("postgres_table = idem-records", "test.conf:1: postgres_table: expected a table name of lower-case letters, digits and _ (at most 63, not starting with a digit), got \"idem-records\""),
        ("postgres_table = Records", "test.conf:1: postgres_table: expected a table name of lower-case letters, digits and _ (at most 63, not starting with a digit), got \"Records\""),
        ("postgres_table = records; drop table x", "test.conf:1: postgres_table: expected a table name of lower-case letters, digits and _ (at most 63, not starting with a digit), got \"records; drop table x\""),
        ("postgres_timeout = 0s", "test.conf:1: postgres_timeout: must be more than 0, got \"0s\""),
        ("postgres_synchronous_commit = off", "test.conf:1: postgres_synchronous_commit: expected true or false, got \"off\""),
        ("on_postgres_error = open", "test.conf:1: on_postgres_error: expected closed or redis, got \"open\""),
        ("retention = 12h", "test.conf:1: retention (12h) must be at least response_ttl (24h): PostgreSQL must keep a record as long as Redis replays it"),
        ("postgres_url = postgres://db/x\nresponse_ttl = 40d", "test.conf:2: retention (30d) must be at least response_ttl (40d): PostgreSQL must keep a record as long as Redis replays it"),
    ])
    func reportsInvalidLine(line: String, message: String) {
        #expect(errors(line) == [message])
    }

    @Test func reportsEveryProblemWithItsLine() {
        let text = """
            # comment
            listen = 127.0.0.1:1

            lock_ttl = soon
            listen = 127.0.0.1:2
            bogus = 1
            """
        #expect(errors(text) == [
            "test.conf:4: lock_ttl: expected a duration such as 250ms, 30s, 5m, 24h or 30d, got \"soon\"",
            "test.conf:5: duplicate key listen (first set on line 2)",
            "test.conf:6: unknown key \"bogus\"",
        ])
    }

    @Test func precedenceIsSetOverEnvironmentOverFile() throws {
        let c = try load(
            "listen = 127.0.0.1:1\nkey_prefix = file:\nlog_level = error",
            env: ["IDEMPROXY_LISTEN": "127.0.0.1:2", "IDEMPROXY_KEY_PREFIX": "env:", "HOME": "/root"],
            sets: ["listen=127.0.0.1:3"]
        ).get()
        #expect(c.listen.port == 3)
        #expect(c.keyPrefix == "env:")
        #expect(c.logLevel == .error)
    }

    @Test func environmentAndSetErrorsNameTheirSource() {
        #expect(errors("", env: ["IDEMPROXY_LOCK_TTL": "x"]) == [
            "IDEMPROXY_LOCK_TTL: lock_ttl: expected a duration such as 250ms, 30s, 5m, 24h or 30d, got \"x\""
        ])
        #expect(errors("", env: ["IDEMPROXY_NOPE": "1"]) == ["IDEMPROXY_NOPE: unknown key \"nope\""])
        #expect(errors("", sets: ["upstream_timeout=2m"]) == [
            "--set upstream_timeout: lock_ttl (60s) must exceed upstream_timeout (120s), or a slow upstream could run a request twice"
        ])
        #expect(errors("", sets: ["listen"]) == ["--set listen: expected KEY=VALUE"])
        #expect(errors("", env: ["IDEMPROXY_STORE_5XX": "true"], sets: ["release_statuses=5xx"]) == [
            "--set release_statuses: store_5xx and release_statuses are both set (the other at IDEMPROXY_STORE_5XX); store_5xx = true is the older spelling of release_statuses = 408,425,429: keep one"
        ])
        #expect(errors("", env: ["IDEMPROXY_STORE_5XX": "true", "IDEMPROXY_RELEASE_STATUSES": "5xx"]) == [
            "IDEMPROXY_STORE_5XX: store_5xx and release_statuses are both set (the other at IDEMPROXY_RELEASE_STATUSES); store_5xx = true is the older spelling of release_statuses = 408,425,429: keep one"
        ])
        #expect(errors("redis_sentinel = m") == [
            "test.conf:1: redis_sentinel needs redis_url to list the Sentinels (redis://s1:26379,s2:26379,s3:26379)"
        ])
        #expect(errors("store_5xx = true", sets: ["release_statuses=5xx"]) == [
            "--set release_statuses: store_5xx and release_statuses are both set (the other at test.conf:1); store_5xx = true is the older spelling of release_statuses = 408,425,429: keep one"
        ])
    }

    @Test func renderedConfigurationParsesBackToItself() throws {
        var c = ProxyConfiguration()
        c.adminListen = nil
        c.methods = ["POST", "PUT"]
        c.scopeHeaders = []
        c.lockTTLMs = 90_500
        c.maxStoredResponse = 1_000
        c.releaseStatuses = .storing5xx
        let rendered = ConfigLoader.render(c)
        #expect(try load(rendered).get() == c)
    }

    @Test func adminTokenComesFromTheConfigurationOrItsFileAndIsNeverPrinted() throws {
        let file = "/tmp/idemproxy-config-test-token-\(UInt64.random(in: 0...UInt64.max))"
        #expect(FileText.write("s3cret-token \r\nsecond line\n", to: file))
        defer { FileText.remove(file) }
        for source in ["admin_token = s3cret-token", "admin_token_file = \(file)"] {
            let c = try load(source).get()
            #expect(c.adminToken == "s3cret-token")
            let rendered = ConfigLoader.render(c)
            #expect(rendered.contains("admin_token = (set)") && !rendered.contains("s3cret") && !rendered.contains("admin_token_file"))
        }
        #expect(try load("access_log = all").get().accessLog == .all)
        #expect(errors("access_log = some") == ["test.conf:1: access_log: expected one of off, protected, all, got \"some\""])
        #expect(errors("admin_token = a\nadmin_token_file = \(file)") == [
            "test.conf:2: admin_token and admin_token_file are both set (the other at test.conf:1): keep one"
        ])
        #expect(errors("admin_token_file = /nonexistent/token") == ["test.conf:1: admin_token_file: /nonexistent/token cannot be read"])
        #expect(FileText.write("\n", to: file))
        #expect(errors("\nadmin_token_file = \(file)") == ["test.conf:2: admin_token_file: \(file) has no token on its first line"])
        #expect(errors("admin_listen = off", sets: ["admin_token=x"]) == [
            "test.conf:1: the records API (admin_token) needs admin_listen, which is off"
        ])
    }

    @Test func routesAreCheckedLineByLine() {
        let text = """
            route.charges.path = /v1/charges
            route.charges.colour = red
            route.charges.lock_ttl = 5s
            route.bad.host = api.example
            route.ptr.path = /hooks
            route.ptr.key_from = json:id
            route.ttl.path = /x
            route.ttl.retention = 1h
            route.both.path = /y
            route.both.store_5xx = true
            route.both.release_statuses = 5xx
            route.pat.path = /v1/ch*
            route..path = /z
            route.ok.path = /ok
            route.ok.upstream_timeout = 90s
            """
        // Lines are read first (a malformed name), then each route in turn.
        #expect(errors(text) == [
            "test.conf:13: expected route.NAME.FIELD (NAME of letters, digits, _ and -), got \"route..path\"",
            "test.conf:2: unknown route field \"colour\" in route.charges.colour (a route takes path, host, protect, key_from, \(ConfigLoader.routeOverrides.joined(separator: ", ")))",
            "test.conf:3: route charges: lock_ttl (5s) must exceed upstream_timeout (30s), or a slow upstream could run a request twice",
            "test.conf:4: route bad has no path (route.bad.path = /v1/charges)",
            "test.conf:6: route.ptr.key_from: a JSON pointer is empty or starts with /, got \"id\"",
            "test.conf:11: route both: store_5xx and release_statuses are both set (the other at test.conf:10): keep one",
            "test.conf:12: route.pat.path: * stands only for a whole segment (/v1/*/charges or /v1/charges/*), got \"/v1/ch*\"",
            "test.conf:15: route ok: lock_ttl (60s) must exceed upstream_timeout (90s), or a slow upstream could run a request twice",
        ])
    }

    @Test func aRouteRetentionMatchesOnlyWithALongTermStore() throws {
        #expect(errors("postgres_url = postgres://db/x\nroute.t.path = /t\nroute.t.response_ttl = 40d\nroute.t.retention = 40d\nroute.u.path = /u\nroute.u.retention = 1h") == [
            "test.conf:6: route u: retention (1h) must be at least response_ttl (24h)"
        ])
        // Without one it means nothing, and what --check prints loads again.
        let c = try load("route.t.path = /t\nroute.t.response_ttl = 40d").get()
        #expect(try load(ConfigLoader.render(c)).get() == c)
        #expect(errors("route.default.path = /x") == [
            "test.conf:1: a route may not be named default: that is the top level's name in metrics and logs"
        ])
    }

    @Test func routesPrintBackAndSetOverridesTheFile() throws {
        let c = try load("""
            route.hooks.path = /hooks/*
            route.hooks.key_from = json:/data/id
            route.charges.path = /v1/charges
            route.charges.response_ttl = 7d
            route.charges.retention = 7d
            """, sets: ["route.charges.require_key=true", "route.late.path=/late"]).get()
        #expect(c.routes.map(\.name) == ["hooks", "charges", "late"])
        #expect(c.routes[1].settings.requireKey && c.routes[1].settings.responseTTLMs == 7 * 86_400_000)
        #expect(c.routes[0].keyFromJSON?.description == "/data/id")
        let rendered = ConfigLoader.render(c)
        #expect(rendered.contains("route.hooks.key_from = json:/data/id\nroute.hooks.methods = POST,PATCH"))
        #expect(rendered.contains("route.charges.path = /v1/charges\nroute.charges.host = \nroute.charges.protect = true"))
        #expect(rendered.contains("route.charges.require_key = true"))
        #expect(try load(rendered).get() == c)
        #expect(errors("", env: ["IDEMPROXY_ROUTE_X_PATH": "/x"]) == [
            "IDEMPROXY_ROUTE_X_PATH: routes have no environment form: set route.NAME.FIELD in the file or with --set"
        ])
    }

    @Test func passwordsAreMaskedWhenPrinted() throws {
        let c = try load("redis_url = redis://user:hunter2@h:6379/1").get()
        #expect(!ConfigLoader.render(c).contains("hunter2"))
        #expect(ConfigLoader.render(c).contains("redis_url = redis://user:***@h:6379/1"))
    }
}
