import HTTPWire
import IdempotencyCore
import NIOCore
import RedisClient

/// One input, every parser that reads untrusted bytes: the key header, the config file, a
/// route's JSON pointer and the body reader that follows it, the record codec, the RESP reader (and what reads its replies: the cluster slot map,
/// redirections, Pub/Sub pushes), the client request parser and the upstream response parser.
/// None may crash; each must accept or refuse cleanly.
///
/// Fuzz with `scripts/fuzz` (libFuzzer provides `main`; the script builds with
/// `-sanitize=address,fuzzer`, since two separate `-sanitize=` flags leave Swift code without
/// coverage counters). Without those flags it is a replay driver: `fuzz-parsers FILE...` runs
/// saved inputs.
/// Pointers into a fuzzed body: a member, a nested member, an array element, the whole document.
let fuzzPointers = ["/id", "/data/object/id", "/a/0/b", "/~1~0", ""].map { try! JSONPointer(parsing: $0) }

func fuzzOne(_ bytes: UnsafeRawBufferPointer) {
    let text = String(decoding: bytes, as: UTF8.self)
    _ = try? IdempotencyKey.parse(headerValues: [text], headerName: "Idempotency-Key", maxLength: 255)
    _ = try? IdempotencyKey.parse(headerValues: text.split(separator: "\n").map(String.init), headerName: "K", maxLength: 16)

    var loader = ConfigLoader()
    loader.applyFile(named: "fuzz.conf", contents: text)
    if case .success(let configuration) = loader.finish() {
        // Whatever parses must print back to something that parses to the same.
        var again = ConfigLoader()
        again.applyFile(named: "again", contents: ConfigLoader.render(configuration))
        guard case .success(let reparsed) = again.finish(), reparsed == configuration else {
            fatalError("config did not round-trip: \(text)")
        }
    }

    // The input as a pointer, and as a body that pointers are followed into.
    _ = try? JSONPointer(parsing: text)
    for pointer in fuzzPointers {
        if let key = pointer.key(in: bytes), key.isEmpty && bytes.firstIndex(of: UInt8(ascii: "\"")) == nil {
            fatalError("an empty key without a string in the body")
        }
    }

    if let record = try? IdempotencyRecord.decode(Array(bytes)) {
        guard record.encoded() == Array(bytes) else { fatalError("record did not round-trip") }
    }

    // The response parser, whole and split in two: the same bytes must give the same body.
    var bodies: [Int] = []
    for split in [bytes.count, bytes.count / 2] {
        var parser = ResponseParser()
        parser.expectResponse(toHEAD: false)
        var parts: [ResponseParser.Part] = []
        do {
            try parser.feed(ByteBuffer(bytes: bytes[..<split]), into: &parts)
            if !parser.isIdle { try parser.feed(ByteBuffer(bytes: bytes[split...]), into: &parts) }
            try parser.connectionClosed(into: &parts)
            var length = 0
            for case .body(let body) in parts { length += body.readableBytes }
            for case .head(var head) in parts {
                // A header removed by name is gone, whatever its case.
                guard let name = head.headers.first?.name.lowercased() else { continue }
                head.remove(name: name)
                if head.headers.contains(where: { $0.name.lowercased() == name }) { fatalError("\(name) not removed") }
            }
            bodies.append(length)
        } catch {}
    }
    if bodies.count == 2 && bodies[0] != bodies[1] { fatalError("response body depends on how the bytes were split") }

    // The request parser, whole and split in two: the same requests, or the same refusal.
    let requests = [bytes.count, bytes.count / 3].map { split in parseRequests([bytes[..<split], bytes[split...]]) }
    if requests[0] != requests[1] { fatalError("requests depend on how the bytes were split:\n\(requests)") }

    let reader = RESPReader()
    do {
        try reader.feed(ByteBuffer(bytes: bytes))
        while let reply = try reader.next() {
            _ = try? ClusterSlotMap(clusterSlots: reply, askedHost: "seed")
            _ = RedisPush(reply)
        }
    } catch {}
    _ = ClusterRedirect(error: text, answeredBy: ClusterNode(host: "seed", port: 7000))
}

/// The requests in `pieces` (read one after the other) as text, ending with the refusal if any.
/// Every head must also go upstream as a head that parses again to the same request.
func parseRequests(_ pieces: [Slice<UnsafeRawBufferPointer>]) -> String {
    var parser = RequestParser()
    var text = ""
    do {
        for piece in pieces {
            try parser.feed(ByteBuffer(bytes: piece)) { part in
                switch part {
                case .head(let head):
                    text += "\n\(head.method) \(head.target) \(head.version) \(head.framing) \(head.keepAlive) "
                    text += String(buffer: head.headerLines)
                    checkForwarded(head)
                case .body(let body): text += String(buffer: body)
                case .end: text += "\nend"
                }
            }
        }
    } catch {
        text += "\nrefused: \(error)"
    }
    return text
}

func checkForwarded(_ client: RequestHead) {
    let forwarded = ForwardedRequest(from: client, basePath: "/base", hostHeader: "up", clientAddress: "10.0.0.1")
    var parser = RequestParser()
    var again: RequestHead?
    do {
        try parser.feed(forwarded.head) { if case .head(let head) = $0 { again = head } }
    } catch {
        fatalError("a forwarded head does not parse: \(error)\n\(String(buffer: forwarded.head))")
    }
    let target = client.target == "*" ? "*" : "/base" + client.target
    guard let again, again.method == client.method, again.target == target,
        again.framing == client.framing || (client.framing == .none && again.framing == .length(0)),
        forwarded.chunked == (client.framing == .chunked)
    else { fatalError("a forwarded head says something else:\n\(String(buffer: forwarded.head))") }
}

#if FUZZING
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzerTestOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    fuzzOne(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}
#else
#if canImport(Glibc)
import Glibc
#endif

@main
struct ReplayDriver {
    static func main() {
        for path in CommandLine.arguments.dropFirst() {
            guard let file = fopen(path, "rb") else {
                print("cannot open \(path)")
                exit(1)
            }
            var bytes: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 65_536)
            while true {
                let n = fread(&chunk, 1, chunk.count, file)
                bytes += chunk[0..<n]
                if n < chunk.count { break }
            }
            fclose(file)
            bytes.withUnsafeBytes { fuzzOne($0) }
            print("ok \(path)")
        }
    }
}
#endif
