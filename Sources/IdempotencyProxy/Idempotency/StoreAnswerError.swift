import IdempotencyCore

/// A failure of either store (`StoreError`, `LongTermStoreError`) in the request machine's
/// terms, so that one path hands both stores' answers to it.
protocol StoreAnswerError: Error, CustomStringConvertible {
    var failure: ProtectedRequestMachine.StoreFailure { get }
}

extension StoreError: StoreAnswerError {}
extension LongTermStoreError: StoreAnswerError {}
