#if canImport(Glibc)
import Glibc
#endif

/// Small files for configuration tests, without Foundation.
enum FileText {
    static func write(_ text: String, to path: String) -> Bool {
        guard let file = fopen(path, "w") else { return false }
        defer { fclose(file) }
        return fputs(text, file) >= 0
    }

    static func remove(_ path: String) { unlink(path) }
}
