import NIOHTTP1

/// What the `detail` of a 400 says about a request NIO's decoder refused: the client (or its
/// developer) should learn what to fix, not the parser's internal name.
enum MalformedRequest {
    static func detail(_ error: HTTPParserError) -> String {
        "The request is not valid HTTP/1.1: " + reason(error)
    }

    private static func reason(_ error: HTTPParserError) -> String {
        switch error {
        case .invalidCharactersUsed, .invalidConstant:
            return "the request line or a header does not have the form HTTP requires."
        case .trailingGarbage:
            return "bytes follow the request where none may."
        case .invalidEOFState:
            return "the connection ended in the middle of the request."
        case .closedConnection:
            return "a request came after the client asked to close the connection."
        case .invalidVersion:
            return "the protocol version is not HTTP/1.0 or HTTP/1.1."
        case .invalidMethod:
            return "the method is not one the proxy knows (or not a token)."
        case .invalidURL, .invalidHost, .invalidPort, .invalidPath, .invalidQueryString, .invalidFragment:
            return "the request target is not a valid path and query."
        case .lfExpected:
            return "a line does not end with CRLF."
        case .invalidHeaderToken:
            return "a header name or value contains characters HTTP does not allow."
        case .invalidContentLength:
            return "Content-Length is not one decimal number."
        case .unexpectedContentLength:
            return "Content-Length is not allowed here (for example next to Transfer-Encoding)."
        case .invalidChunkSize:
            return "a chunk size of the chunked body is not a hexadecimal number."
        case .unknown:
            // llhttp's errors without a case of their own: mostly framing.
            return "its framing is invalid (for example Content-Length next to Transfer-Encoding, a Transfer-Encoding other than chunked, or a missing CR)."
        default:
            return "the parser refused it (\(error))."
        }
    }
}
