import NIOCore

/// One header line of a received head, as bytes in place (valid only inside the call that
/// hands it out).
struct HeaderField {
    /// The whole line without its CRLF.
    let line: HeadSyntax.Bytes
    let name: HeadSyntax.Bytes
    /// Without surrounding whitespace.
    let value: HeadSyntax.Bytes

    /// The name equals `lowercase` ignoring ASCII case.
    func hasName(_ lowercase: StaticString) -> Bool {
        HeadSyntax.equalsIgnoringCase(name, lowercase)
    }
}

extension ByteBuffer {
    /// Calls `body` with each line of a head's header section (lines the parsers checked and
    /// kept, each with its CRLF), in order.
    func forEachHeaderField(_ body: (HeaderField) -> Void) {
        withUnsafeReadableBytes { bytes in
            var lines = HeadLines(bytes)
            while let line = lines.next(), let colon = line.firstIndex(of: UInt8(ascii: ":")) {
                body(HeaderField(line: line, name: line[..<colon], value: HeadSyntax.trimmed(line[(colon + 1)...])))
            }
        }
    }

    /// `line` (checked by the parser, without its line end) and CRLF, in one copy.
    mutating func writeHeaderLine(_ line: HeadSyntax.Bytes) {
        writeWithUnsafeMutableBytes(minimumWritableBytes: line.count + 2) { out in
            out.copyMemory(from: UnsafeRawBufferPointer(rebasing: line))
            out[line.count] = UInt8(ascii: "\r")
            out[line.count + 1] = UInt8(ascii: "\n")
            return line.count + 2
        }
    }
}
