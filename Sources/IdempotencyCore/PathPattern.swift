/// A route's `path` (docs/behaviour.md, "Routes"): `/v1/charges` is that path exactly,
/// `/v1/charges/*` that path and everything under it, and a `*` between slashes one non-empty
/// segment (`/v1/customers/*/charges`). Matched against the path as sent, without its query:
/// `%2F` is three bytes, not a slash.
public struct PathPattern: Sendable, Equatable, CustomStringConvertible {
    enum Segment: Sendable, Equatable {
        case literal([UInt8])
        case any
    }

    let segments: [Segment]
    /// Ends in `/*`: the path of the segments before it, and everything under it.
    let underneath: Bool
    public let description: String

    public init(parsing text: String) throws(ConfigValueError) {
        guard text.hasPrefix("/") else { throw ConfigValueError("a path pattern starts with /, got \"\(text)\"") }
        guard !text.contains("?"), !text.contains("#") else {
            throw ConfigValueError("a path pattern is matched without the query: no ? or # in \"\(text)\"")
        }
        var parts = text.utf8.dropFirst().split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false).map(Array.init)
        underneath = parts.last == [UInt8(ascii: "*")]
        if underneath { parts.removeLast() }
        var segments: [Segment] = []
        for part in parts {
            if part == [UInt8(ascii: "*")] {
                segments.append(.any)
            } else if part.contains(UInt8(ascii: "*")) {
                throw ConfigValueError("* stands only for a whole segment (/v1/*/charges or /v1/charges/*), got \"\(text)\"")
            } else {
                segments.append(.literal(part))
            }
        }
        self.segments = segments
        description = text
    }

    /// `path`: the request target's path, up to its `?`.
    public func matches(_ path: UnsafeRawBufferPointer) -> Bool {
        guard path.first == UInt8(ascii: "/") else { return false }
        var position = 1
        for segment in segments {
            // The path has a segment here: after the start, or after a slash.
            guard position <= path.count else { return false }
            var end = position
            while end < path.count && path[end] != UInt8(ascii: "/") { end += 1 }
            switch segment {
            case .literal(let bytes):
                guard end - position == bytes.count, bytes.withUnsafeBytes({ $0.elementsEqual(path[position..<end]) }) else {
                    return false
                }
            case .any:
                guard end > position else { return false }
            }
            position = end + 1
        }
        // Each segment ended at a slash or at the end: under the pattern's path either way;
        // exactly it only at the end.
        return underneath || position == path.count + 1
    }
}
