import Foundation
import WStoreCore
import WeightStore

/// One request of a Mooncake-format trace (format-spec/KV.md §6).
public struct TraceRequest: Sendable, Equatable {
    /// Arrival, in milliseconds.
    public var timestamp: Int
    /// Prompt tokens.
    public var inputLength: Int
    /// Generated tokens.
    public var outputLength: Int
    /// One id per prompt block, chained by prefix: equal ids mean equal prefixes.
    public var hashIDs: [Int]

    /// A request from its fields.
    public init(timestamp: Int, inputLength: Int, outputLength: Int, hashIDs: [Int]) {
        self.timestamp = timestamp
        self.inputLength = inputLength
        self.outputLength = outputLength
        self.hashIDs = hashIDs
    }
}

/// Reads Mooncake-format request traces: one JSON object per line with `timestamp`,
/// `input_length`, `output_length` and `hash_ids`.
public enum MooncakeTrace {
    /// Reads every request of the file at `path`.
    /// - Throws: ``WStoreError/invalidArgument(_:)`` naming the line for a malformed one,
    ///   ``WStoreError/io(call:path:errno:)`` when the file cannot be read.
    public static func read(path: String) throws -> [TraceRequest] {
        let data = try Posix.readFile(path)
        return try parse(data, path: path)
    }

    /// Reads every request of `data`, the contents of file `path`.
    /// - Throws: ``WStoreError/invalidArgument(_:)`` naming the line for a malformed one.
    package static func parse(_ data: [UInt8], path: String) throws -> [TraceRequest] {
        var out: [TraceRequest] = []
        var lineNumber = 0
        for line in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            lineNumber += 1
            if line.allSatisfy({ $0 == 0x20 || $0 == 0x0D || $0 == 0x09 }) { continue }
            func bad(_ why: String) -> WStoreError { .invalidArgument("\(path):\(lineNumber): \(why)") }
            guard let obj = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any] else {
                throw bad("not a JSON object")
            }
            func int(_ key: String) throws -> Int {
                guard let n = obj[key] as? NSNumber, n.doubleValue == n.doubleValue.rounded(), n.intValue >= 0 else {
                    throw bad("\(key) missing or not a non-negative integer")
                }
                return n.intValue
            }
            guard let ids = obj["hash_ids"] as? [Any] else { throw bad("hash_ids missing or not a list") }
            let hashIDs = try ids.map { v -> Int in
                guard let n = v as? NSNumber, n.doubleValue == n.doubleValue.rounded() else {
                    throw bad("hash_ids holds a non-integer")
                }
                return n.intValue
            }
            out.append(
                TraceRequest(
                    timestamp: try int("timestamp"), inputLength: try int("input_length"),
                    outputLength: obj["output_length"] == nil ? 0 : try int("output_length"),
                    hashIDs: hashIDs))
        }
        return out
    }
}
