import CHiredis
import NIOCore

/// Encodes one command with hiredis's `redisFormatSdsCommandArgv` (binary-safe: lengths, not
/// NULs). Its sds sibling formats with hiredis's own `sdscatfmt`; `redisFormatCommandArgv`
/// calls libc `sprintf` once per argument, which was 5% of a first-time protected request.
public enum RESPFormatter {
    /// Appends the RESP encoding of `arguments` to `buffer`.
    public static func write(_ arguments: [RedisArgument], into buffer: inout ByteBuffer) {
        // Lay every argument end to end in one allocation, then hand hiredis pointers into it.
        var total = 0
        for argument in arguments { total += argument.count }
        var storage = [UInt8]()
        storage.reserveCapacity(max(total, 1))
        for argument in arguments { argument.append(to: &storage) }
        storage.withUnsafeBufferPointer { bytes in
            let base = UnsafeRawPointer(bytes.baseAddress!).assumingMemoryBound(to: CChar.self)
            withUnsafeTemporaryAllocation(of: UnsafePointer<CChar>?.self, capacity: arguments.count) { argv in
                withUnsafeTemporaryAllocation(of: Int.self, capacity: arguments.count) { argvlen in
                    var offset = 0
                    for (index, argument) in arguments.enumerated() {
                        argv[index] = base + offset
                        argvlen[index] = argument.count
                        offset += argument.count
                    }
                    var command: sds?
                    let length = redisFormatSdsCommandArgv(&command, Int32(arguments.count), argv.baseAddress, argvlen.baseAddress)
                    guard length >= 0, let command else { fatalError("hiredis could not allocate a command") }
                    buffer.writeBytes(UnsafeRawBufferPointer(start: command, count: Int(length)))
                    redisFreeSdsCommand(command)
                }
            }
        }
    }
}

/// One argument of a Redis command: text or raw bytes.
public enum RedisArgument: Sendable, ExpressibleByStringLiteral {
    case string(String)
    case bytes([UInt8])
    case buffer(ByteBuffer)

    public init(stringLiteral value: String) { self = .string(value) }

    public init(_ value: Int) { self = .string(String(value)) }

    var count: Int {
        switch self {
        case .string(let s): return s.utf8.count
        case .bytes(let b): return b.count
        case .buffer(let b): return b.readableBytes
        }
    }

    func append(to storage: inout [UInt8]) {
        switch self {
        case .string(let s): storage.append(contentsOf: s.utf8)
        case .bytes(let b): storage.append(contentsOf: b)
        case .buffer(let b): storage.append(contentsOf: b.readableBytesView)
        }
    }
}
