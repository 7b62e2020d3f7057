#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A route's `path` (docs/behaviour.md, "Routes"): `/v1/charges` is that path exactly,
/// `/v1/charges/*` that path and everything under it, and a `*` between slashes one non-empty
/// segment (`/v1/customers/*/charges`). Matched against the path as sent, without its query:
/// `%2F` is three bytes, not a slash.
public struct PathPattern: Sendable, Equatable, CustomStringConvertible {
    /// A segment: `*`, or the literal bytes `literals[start..<end]`. Plain values in one flat
    /// buffer, so that matching touches no reference count (a match runs for every request).
    struct Segment: Sendable, Equatable {
        let start: Int
        let end: Int
        let any: Bool
    }

    let segments: [Segment]
    let literals: [UInt8]
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
        var literals: [UInt8] = []
        for part in parts {
            if part == [UInt8(ascii: "*")] {
                segments.append(Segment(start: 0, end: 0, any: true))
            } else if part.contains(UInt8(ascii: "*")) {
                throw ConfigValueError("* stands only for a whole segment (/v1/*/charges or /v1/charges/*), got \"\(text)\"")
            } else {
                segments.append(Segment(start: literals.count, end: literals.count + part.count, any: false))
                literals += part
            }
        }
        self.segments = segments
        self.literals = literals
        description = text
    }

    /// `path`: the request target's path, up to its `?`.
    public func matches(_ path: UnsafeRawBufferPointer) -> Bool {
        guard path.first == UInt8(ascii: "/") else { return false }
        return literals.withUnsafeBufferPointer { literals in
            segments.withUnsafeBufferPointer { segments in
                var position = 1
                for segment in segments {
                    // The path has a segment here: after the start, or after a slash.
                    guard position <= path.count else { return false }
                    var end = position
                    while end < path.count && path[end] != UInt8(ascii: "/") { end += 1 }
                    if segment.any {
                        guard end > position else { return false }
                    } else {
                        let length = end - position
                        guard length == segment.end - segment.start,
                            length == 0 || memcmp(path.baseAddress! + position, literals.baseAddress! + segment.start, length) == 0
                        else { return false }
                    }
                    position = end + 1
                }
                // Each segment ended at a slash or at the end: under the pattern's path either
                // way; exactly it only at the end.
                return underneath || position == path.count + 1
            }
        }
    }
}
