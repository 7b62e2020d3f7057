import NIOCore
import PostgresNIO

/// A batch's column as one array parameter, in PostgreSQL's binary array format, written into
/// one buffer of its exact size. postgres-nio's `PostgresData(array:)` wants a `PostgresData`,
/// and so a buffer, per element, and grows the array's own buffer as it writes: about a dozen
/// allocations per batch and column that this does in one.
enum PostgresArray {
    static func text<C: Collection>(_ values: C) -> PostgresData where C.Element == String {
        encode(.text, .textArray, values, size: { $0.utf8.count }) { buffer, value in buffer.writeString(value) }
    }

    static func bytea<C: Collection>(_ values: C) -> PostgresData where C.Element == [UInt8] {
        encode(.bytea, .byteaArray, values, size: { $0.count }) { buffer, value in buffer.writeBytes(value) }
    }

    static func int8<C: Collection>(_ values: C) -> PostgresData where C.Element == Int64 {
        encode(.int8, .int8Array, values, size: { _ in 8 }) { buffer, value in buffer.writeInteger(value) }
    }

    /// One dimension, no NULLs: the header (dimensions, NULL flag, element type, length, lower
    /// bound 1), then each element as its length and its bytes (`array_recv`).
    private static func encode<C: Collection>(
        _ element: PostgresDataType, _ array: PostgresDataType, _ values: C, size: (C.Element) -> Int, write: (inout ByteBuffer, C.Element) -> Void
    ) -> PostgresData {
        var payload = 0
        for value in values { payload += 4 + size(value) }
        var buffer = ByteBufferAllocator().buffer(capacity: 20 + payload)
        buffer.writeInteger(Int32(values.isEmpty ? 0 : 1))
        buffer.writeInteger(Int32(0))
        buffer.writeInteger(element.rawValue)
        if !values.isEmpty {
            buffer.writeInteger(Int32(values.count))
            buffer.writeInteger(Int32(1))
        }
        for value in values {
            buffer.writeInteger(Int32(size(value)))
            write(&buffer, value)
        }
        return PostgresData(type: array, typeModifier: nil, formatCode: .binary, value: buffer)
    }
}
