import NIOCore

/// What the proxy asks of Redis, answered by one server (`RedisConnection`) or by a cluster
/// (`RedisClusterClient`). Every method must be called on `eventLoop`; completions run there.
public protocol RedisCommands: AnyObject {
    var eventLoop: any EventLoop { get }

    /// Sends one command. `key` is the key it works on, which picks the node in a cluster
    /// (nil: any node will do).
    func send(_ arguments: [RedisArgument], key: RedisArgument?, completion: @escaping RedisCompletion)

    /// Runs a script by its SHA-1, falling back to `EVAL` when the server does not know it.
    /// In a cluster all `keys` must share one hash slot; the first picks the node.
    func run(_ script: RedisScript, keys: [RedisArgument], arguments: [RedisArgument], completion: @escaping RedisCompletion)

    /// Succeeds when every server the client needs answers `PING` (readiness).
    func ping(completion: @escaping (Result<Void, RedisError>) -> Void)

    /// Told when a server connection goes from usable to unusable or back, with the server.
    var onAvailabilityChange: ((_ server: String, _ available: Bool, _ error: RedisError?) -> Void)? { get set }

    /// The server in use when another one may take its place (a Sentinel's master), for
    /// `/readyz`; nil when the address is fixed by the configuration.
    var serverInUse: String? { get }

    func close()
}

extension RedisCommands {
    public var serverInUse: String? { nil }
}

extension RedisConnection: RedisCommands {
    public func send(_ arguments: [RedisArgument], key: RedisArgument?, completion: @escaping RedisCompletion) {
        send(arguments, completion: completion)
    }

    public func ping(completion: @escaping (Result<Void, RedisError>) -> Void) {
        send(["PING"]) { result in
            switch result {
            case .success(.status("PONG")): completion(.success(()))
            case .success(let reply): completion(.failure(.unexpectedReply("PING: \(reply)")))
            case .failure(let error): completion(.failure(error))
            }
        }
    }
}
