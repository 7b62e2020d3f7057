import NIOSSL

/// Settings of one load run (docs/behaviour.md §6).
public struct LoadOptions: Sendable {
    public var target: HTTPTarget
    /// More proxies of a fleet: a key's attempt on a new connection (after a lost response)
    /// goes to the next of `target` and these, in turn, so retries cross proxies.
    public var moreTargets: [HTTPTarget] = []
    public var requests = 1_000
    public var concurrency = 16
    /// Probability that an attempt's response is "lost": the client drops the connection.
    public var loseRate = 0.0
    public var maxRetries = 10
    public var statsTarget: HTTPTarget?
    public var bodyBytes = 64
    /// After a lost attempt's request is sent, the connection is dropped at a uniformly random
    /// moment within this window: early drops race the upstream, late ones lose its answer.
    public var loseWindowMs = 20.0
    public var backoff = Backoff()
    /// Print a progress line every second.
    public var progress = false
    /// For `https://` targets: the client context (trust roots from `--ca-file`, or the
    /// system's), made once per run.
    public var tls: NIOSSLContext?

    public init(target: HTTPTarget) {
        self.target = target
    }

    func target(forAttempt attempt: Int) -> HTTPTarget {
        let index = attempt % (moreTargets.count + 1)
        return index == 0 ? target : moreTargets[index - 1]
    }
}

/// `http://host:port/path` or `https://…`.
public struct HTTPTarget: Sendable, Equatable {
    public var host: String
    public var port: Int
    public var path: String
    public var tls: Bool

    public init(host: String, port: Int, path: String, tls: Bool = false) {
        self.host = host
        self.port = port
        self.path = path
        self.tls = tls
    }

    public init?(_ url: String) {
        tls = url.hasPrefix("https://")
        guard tls || url.hasPrefix("http://") else { return nil }
        let rest = url.dropFirst(tls ? "https://".count : "http://".count)
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        let authority = rest[..<slash]
        path = slash == rest.endIndex ? "/" : String(rest[slash...])
        if let colon = authority.lastIndex(of: ":"), let port = Int(authority[authority.index(after: colon)...]) {
            host = String(authority[..<colon])
            self.port = port
        } else {
            host = String(authority)
            port = tls ? 443 : 80
        }
        if host.isEmpty { return nil }
    }
}
