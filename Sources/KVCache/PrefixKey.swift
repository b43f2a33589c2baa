import WStoreCore

/// Chained chunk keys: chunk i's key is xxh3-64, seeded with chunk i−1's key (0 for the
/// first), of the chunk's token ids (u32 little-endian), the model name, a 0 byte and the
/// salt. A chunk is thus found only under the exact prefix that produced it.
public enum PrefixKey {
    /// The keys of the whole chunks of `tokens`, in order.
    public static func chain(tokens: [UInt32], chunkTokens: Int, model: String, salt: String = "") -> [UInt64] {
        precondition(chunkTokens > 0)
        let suffix = Array(model.utf8) + [0] + Array(salt.utf8)
        var keys: [UInt64] = []
        keys.reserveCapacity(tokens.count / chunkTokens)
        var parent: UInt64 = 0
        var buffer = [UInt8](repeating: 0, count: 4 * chunkTokens + suffix.count)
        for c in 0 ..< tokens.count / chunkTokens {
            buffer.withUnsafeMutableBytes { b in
                for i in 0 ..< chunkTokens {
                    b.storeBytes(of: tokens[c * chunkTokens + i].littleEndian, toByteOffset: 4 * i, as: UInt32.self)
                }
                for (i, s) in suffix.enumerated() { b[4 * chunkTokens + i] = s }
            }
            parent = buffer.withUnsafeBytes { xxh3($0, seed: parent) }
            keys.append(parent)
        }
        return keys
    }

    /// A key as LMDB key bytes (big-endian, so LMDB's order is numeric order).
    package static func bytes(_ key: UInt64) -> [UInt8] {
        withUnsafeBytes(of: key.bigEndian) { Array($0) }
    }
}
