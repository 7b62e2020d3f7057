import Foundation

/// A private Debian nginx serving HTTPS on a free loopback port with a certificate of the
/// test's, answering every request 201 with a small body: a real `https://` upstream.
public final class NginxProcess: @unchecked Sendable {
    public let port: Int
    private let directory: String
    private let process: ChildProcess

    public init(certificateFile: String, keyFile: String) throws {
        directory = "/tmp/idemproxy-nginx-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        port = try FreePort.next()
        let user = getuid() == 0 ? "user root root;" : ""
        try """
            worker_processes 1;
            daemon off;
            \(user)
            pid \(directory)/nginx.pid;
            error_log \(directory)/error.log warn;
            events { worker_connections 256; }
            http {
              access_log off;
              client_body_temp_path \(directory)/body;
              server {
                listen 127.0.0.1:\(port) ssl;
                ssl_certificate \(certificateFile);
                ssl_certificate_key \(keyFile);
                location / { return 201 '{"id":"nginx"}'; }
              }
            }
            """.write(toFile: directory + "/nginx.conf", atomically: true, encoding: .utf8)
        // A clean signal mask (ChildProcess), so that the master obeys SIGTERM and takes its
        // worker with it.
        process = try ChildProcess("/usr/sbin/nginx", ["-c", directory + "/nginx.conf", "-p", directory])
        try FreePort.waitUntilListening(port: port) { self.process.wait(timeout: 0) == nil }
    }

    deinit {
        process.signal(SIGTERM)
        _ = process.wait(timeout: 5)
        try? FileManager.default.removeItem(atPath: directory)
    }
}
