import RawStructuredFieldValues

/// Reads the key from its header values (docs/behaviour.md §3, rule 2).
///
/// The IETF draft makes the key an sf-string (`"abc-123"`); many clients send it bare
/// (`abc-123`, an unquoted UUID), so a value that does not parse as an sf-string is taken as
/// it stands. Both forms of the same characters name the same key. Parameters on an sf-string
/// (`"k";p=1`) are ignored, as RFC 8941 asks of unknown parameters, so they name key `k`.
public enum IdempotencyKey {
    /// Why a key header was refused; the text is the 400's `detail`.
    public struct Invalid: Error, Equatable {
        public let detail: String
    }

    /// The key, nil when no key header was sent.
    public static func parse(
        headerValues: [String],
        headerName: String,
        maxLength: Int
    ) throws(Invalid) -> String? {
        guard let raw = headerValues.first else { return nil }
        guard headerValues.count == 1 else {
            throw Invalid(detail: "The request has \(headerValues.count) \(headerName) headers; send exactly one.")
        }
        let value = trimmed(raw)
        let key: String
        if value.hasPrefix("\"") {
            guard let parsed = sfString(value) else {
                throw Invalid(detail: "The \(headerName) header starts with a quote but is not a valid structured-field string.")
            }
            key = parsed
        } else {
            guard !value.contains(",") else {
                throw Invalid(detail: "The \(headerName) header holds a list; send exactly one key.")
            }
            key = value
        }
        try validate(key, from: "The \(headerName) header", maxLength: maxLength)
        return key
    }

    /// The rules every key follows, wherever it came from (`from` names that place in the
    /// `detail`): not empty, printable ASCII, at most `maxLength`.
    public static func validate(_ key: String, from place: String, maxLength: Int) throws(Invalid) {
        guard !key.isEmpty else {
            throw Invalid(detail: "\(place) is empty.")
        }
        guard key.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) else {
            throw Invalid(detail: "\(place) may only contain printable ASCII characters.")
        }
        guard key.utf8.count <= maxLength else {
            throw Invalid(detail: "\(place) is \(key.utf8.count) characters long; the limit is \(maxLength).")
        }
    }

    private static func sfString(_ value: String) -> String? {
        var parser = StructuredFieldValueParser(Array(value.utf8))
        guard let item = try? parser.parseItemFieldValue(), case .string(let key) = item.rfc9651BareItem else { return nil }
        return key
    }

    private static func trimmed(_ value: String) -> String {
        var s = Substring(value)
        while let c = s.first, c == " " || c == "\t" { s.removeFirst() }
        while let c = s.last, c == " " || c == "\t" { s.removeLast() }
        return String(s)
    }
}
