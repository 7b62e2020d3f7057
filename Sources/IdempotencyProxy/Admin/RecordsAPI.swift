import IdempotencyCore
import Logging
import NIOCore

/// The records API (docs/behaviour.md, "The records API"): an operator looks a record up in both
/// stores, or deletes it so that the next request with its key runs again. It runs on the
/// admin connection's loop, through that loop's stores.
struct RecordsAPI {
    /// An answer of the admin listener.
    struct Answer {
        var status: Int
        var contentType: String
        var body: [UInt8]
        var headers: [(String, String)] = []

        init(status: Int, json: [UInt8]) {
            self.status = status
            contentType = "application/json"
            body = json
        }

        init(_ problem: Problem) {
            status = problem.status
            contentType = Problem.contentType
            body = problem.json
            if let retryAfter = problem.retryAfter { headers.append(("Retry-After", String(retryAfter))) }
            if problem.status == 401 { headers.append(("WWW-Authenticate", "Bearer")) }
        }

        static let noContent = Answer(status: 204, json: [])
    }

    let loop: LoopContext

    private var redis: any RecordStore { loop.store }

    private func key(_ id: String) -> String { loop.configuration.keyPrefix + id }

    func get(id: String, answer: @escaping (Answer) -> Void) {
        inPostgres(id, answer: answer) { postgres in
            redis.inspect(key: key(id)) { result in
                switch result {
                case .failure(let error):
                    answer(Answer(.recordStoreUnavailable("Redis did not answer: \(error)")))
                case .success(let held):
                    guard let json = RecordReport.json(id: id, redis: held, postgres: postgres) else {
                        return answer(Answer(.recordNotFound))
                    }
                    answer(Answer(status: 200, json: json))
                }
            }
        }
    }

    /// PostgreSQL's copy when there is a long-term store, first.
    private func inPostgres(_ id: String, answer: @escaping (Answer) -> Void, then: @escaping (HeldRecord?) -> Void) {
        guard let longTerm = loop.longTermStore else { return then(nil) }
        longTerm.inspect(key: key(id)) { result in
            switch result {
            case .failure(let error): answer(Answer(.recordStoreUnavailable("PostgreSQL did not answer: \(error)")))
            case .success(let held): then(held)
            }
        }
    }

    /// PostgreSQL first, then Redis (a record Redis no longer holds would be copied back from
    /// PostgreSQL by the next request). Once PostgreSQL deleted something, Redis's copy goes
    /// whatever its state: an in-flight claim there is the same request settling.
    func delete(id: String, force: Bool, answer: @escaping (Answer) -> Void) {
        let tombstoneOwner = loop.ownerTokens.next()
        let key = key(id)
        let forgetInRedis = { (postgres: ForgetResult?) in
            let deletedInPostgres = postgres == .completed || postgres == .inFlightForced
            redis.forget(key: key, force: force || deletedInPostgres, tombstoneOwner: tombstoneOwner) { result in
                switch result {
                case .failure(let error):
                    let done = deletedInPostgres ? "It was deleted from PostgreSQL; " : ""
                    answer(Answer(.recordStoreUnavailable(
                        "\(done)Redis did not answer (\(error)); send the DELETE again (with ?force=true if Redis may hold the request in flight).")))
                case .success(.inFlight):
                    answer(Answer(.recordInFlight))
                case .success(let inRedis):
                    guard postgres.map({ $0 != .absent }) ?? false || inRedis != .absent else {
                        return answer(Answer(.recordNotFound))
                    }
                    loop.logger.notice(
                        "record deleted through the records API",
                        metadata: [
                            "record": "\(id)", "force": "\(force)", "redis": "\(inRedis.rawValue)",
                            "postgres": "\(postgres?.rawValue ?? "none")",
                        ])
                    answer(.noContent)
                }
            }
        }
        guard let longTerm = loop.longTermStore else { return forgetInRedis(nil) }
        longTerm.forget(key: key, force: force, tombstoneOwner: tombstoneOwner) { result in
            switch result {
            case .failure(let error):
                answer(Answer(.recordStoreUnavailable("PostgreSQL did not answer (\(error)); nothing was deleted.")))
            case .success(.inFlight):
                answer(Answer(.recordInFlight))
            case .success(let inPostgres):
                forgetInRedis(inPostgres)
            }
        }
    }
}
