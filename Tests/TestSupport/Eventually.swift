/// Polls `done` until it holds, and throws once `seconds` have passed: a test never goes on
/// in a state it did not reach.
public func eventually(
    _ what: @autoclosure () -> String, within seconds: Double = 30, pause: Duration = .milliseconds(100),
    _ done: () async throws -> Bool
) async throws {
    let deadline = ContinuousClock.now + .seconds(seconds)
    while ContinuousClock.now < deadline {
        if try await done() { return }
        try await Task.sleep(for: pause)
    }
    throw TestSupportError("\(what()) did not happen within \(seconds) s")
}
