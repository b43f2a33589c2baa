import Foundation

/// The `settings` record of a KV store (format-spec/KV.md §2): a JSON object written once
/// at creation, keys sorted.
struct KVSettings: Codable, Equatable {
    /// Always `wstore-kv`, and the version of format-spec/KV.md it follows.
    var format: String, format_version: Int
    /// The ``KVStore/Options`` (absent ones take their defaults when read).
    var chunk_tokens: Int?, budget_bytes: Int?, max_chunks: Int?, codec: String?, kivi_group: Int?, kivi_residual: Int?

    static let formatName = "wstore-kv"

    /// The settings of a new store with `options`.
    init(_ options: KVStore.Options, version: Int) {
        format = Self.formatName
        format_version = version
        chunk_tokens = options.chunkTokens
        budget_bytes = options.budgetBytes
        max_chunks = options.maxChunks
        codec = options.codec.rawValue
        kivi_group = options.kivi.group
        kivi_residual = options.kivi.residual
    }

    /// The record's bytes: compact JSON, keys sorted.
    func encoded() throws -> [UInt8] { try sortedJSON(self) }

    /// The settings in `bytes`, or `nil` when they are not a wstore KV settings record.
    static func decode(_ bytes: [UInt8]) -> KVSettings? {
        guard let s = try? JSONDecoder().decode(KVSettings.self, from: Data(bytes)), s.format == formatName else {
            return nil
        }
        return s
    }
}

/// `value` as compact JSON with its keys sorted: the form of a KV store's settings record
/// and of its deferred-commits marker (format-spec/KV.md §2, §9).
func sortedJSON<T: Encodable>(_ value: T) throws -> [UInt8] {
    let e = JSONEncoder()
    e.outputFormatting = [.sortedKeys]
    return [UInt8](try e.encode(value))
}
