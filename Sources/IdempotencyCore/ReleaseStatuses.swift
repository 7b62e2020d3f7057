/// `release_statuses` (docs/behaviour.md, "Which upstream answers are stored"): the upstream
/// answers that say the request was not processed, so that the claim is released and a retry
/// runs again instead of meeting the stored answer for a day or a month.
public struct ReleaseStatuses: Sendable, Equatable, CustomStringConvertible {
    /// One entry of the list: a status code (`429`) or a class (`5xx`, stored as 5).
    public enum Entry: Sendable, Equatable {
        case code(Int)
        case statusClass(Int)
    }

    /// In the order given, so that `--check` prints what the operator wrote.
    public let entries: [Entry]

    /// 408, 425 and 429 say the request was not processed; most 5xx say the same.
    public static let `default` = ReleaseStatuses(entries: [.code(408), .code(425), .code(429), .statusClass(5)])
    /// `store_5xx = true`, the older spelling of the default without `5xx`.
    public static let storing5xx = ReleaseStatuses(entries: [.code(408), .code(425), .code(429)])

    public init(entries: [Entry]) {
        self.entries = entries
    }

    /// Whether an answer with `status` releases the claim. A 2xx or 3xx is a result and is
    /// always stored, whatever the list says.
    public func releases(_ status: Int) -> Bool {
        guard status < 200 || status >= 400 else { return false }
        return entries.contains { entry in
            switch entry {
            case .code(let code): return code == status
            case .statusClass(let digit): return status / 100 == digit
            }
        }
    }

    /// A comma-separated list of codes from 100 to 599 and classes `1xx` … `5xx`; empty: every
    /// answer is stored.
    public static func parse(_ text: String) throws(ConfigValueError) -> ReleaseStatuses {
        var entries: [Entry] = []
        for item in ConfigValues.list(text) {
            let lowered = item.lowercased()
            let entry: Entry
            if lowered.count == 3, lowered.hasSuffix("xx"), let digit = lowered.first?.wholeNumberValue, (1...5).contains(digit) {
                entry = .statusClass(digit)
            } else if item.count == 3, item.allSatisfy(\.isASCII), let code = Int(item), (100...599).contains(code) {
                entry = .code(code)
            } else {
                throw ConfigValueError("expected status codes (100 to 599) and classes (1xx to 5xx), got \"\(item)\"")
            }
            if !entries.contains(entry) { entries.append(entry) }
        }
        return ReleaseStatuses(entries: entries)
    }

    public var description: String {
        entries.map { entry in
            switch entry {
            case .code(let code): return String(code)
            case .statusClass(let digit): return "\(digit)xx"
            }
        }.joined(separator: ",")
    }
}
