import WStoreCore

/// Key layouts of the store's sub-databases (format-spec/FORMAT.md §3).
enum Keys {
    /// `tensors`: model, NUL, tensor name.
    static func tensor(model: String, name: String) -> [UInt8] {
        var k: [UInt8] = []
        k.reserveCapacity(model.utf8.count + 1 + name.utf8.count)
        k.append(contentsOf: model.utf8)
        k.append(0)
        k.append(contentsOf: name.utf8)
        return k
    }

    /// The prefix of every `tensors` (and `experts`) key of a model.
    static func modelPrefix(_ model: String) -> [UInt8] { Array(model.utf8) + [0] }

    /// `experts`: model, NUL, layer (u32 big-endian), expert (u32 big-endian), part.
    /// Big-endian numbers make LMDB's byte order the (layer, expert) order.
    static func expert(model: String, _ key: ExpertKey) -> [UInt8] {
        expertPrefix(model: model, layer: key.layer, expert: key.expert) + Array(key.part.utf8)
    }

    static func expertPrefix(model: String, layer: Int, expert: Int? = nil) -> [UInt8] {
        var k = modelPrefix(model)
        k += bigEndian(UInt32(layer))
        if let expert { k += bigEndian(UInt32(expert)) }
        return k
    }

    /// Splits an `experts` key after the model prefix.
    static func parseExpert(_ key: UnsafeRawBufferPointer, prefixLength: Int) -> ExpertKey? {
        guard key.count >= prefixLength + 8 else { return nil }
        let layer = Int(UInt32(bigEndian: key.loadUnaligned(fromByteOffset: prefixLength, as: UInt32.self)))
        let expert = Int(UInt32(bigEndian: key.loadUnaligned(fromByteOffset: prefixLength + 4, as: UInt32.self)))
        let part = String(decoding: key[(prefixLength + 8)...], as: UTF8.self)
        return ExpertKey(layer: layer, expert: expert, part: part)
    }

    /// `variants`: the `experts` key of the part, NUL, the precision name (FORMAT.md §8).
    static func variant(model: String, _ key: ExpertKey, _ precision: ExpertPrecision) -> [UInt8] {
        expert(model: model, key) + [0] + Array(precision.name.utf8)
    }

    /// Splits a `variants` key after the model prefix: the part key and the precision
    /// (`nil` when the key is malformed or names no precision this build knows).
    static func parseVariant(_ key: UnsafeRawBufferPointer, prefixLength: Int) -> (ExpertKey, ExpertPrecision)? {
        guard key.count > prefixLength + 8, let nul = key[(prefixLength + 8)...].lastIndex(of: 0),
            let precision = ExpertPrecision(rawValue: String(decoding: key[(nul + 1)...], as: UTF8.self)),
            precision != .exact
        else { return nil }
        let part = UnsafeRawBufferPointer(rebasing: key[..<nul])
        guard let k = parseExpert(part, prefixLength: prefixLength) else { return nil }
        return (k, precision)
    }

    /// `meta`: the store record and one record per model.
    static let storeMeta = Array("store".utf8)
    static func modelMeta(_ model: String) -> [UInt8] { Array("model\u{0}".utf8) + Array(model.utf8) }
    static let modelMetaPrefix = Array("model\u{0}".utf8)

    private static func bigEndian(_ v: UInt32) -> [UInt8] {
        [
            UInt8(v >> 24), UInt8(truncatingIfNeeded: v >> 16), UInt8(truncatingIfNeeded: v >> 8),
            UInt8(truncatingIfNeeded: v),
        ]
    }
}
