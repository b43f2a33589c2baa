import WStoreCore
import WeightStore

/// A store with `layers × experts` experts of three f32 parts (`down`, `gate`, `up`) of
/// shape `[rows, cols]` (`cols` a multiple of 32), seeded normal-ish values, each part
/// stored with the `variants` given (Q8_0 and Q4_0 by default); half the parts compressed.
/// Model `m`, top-2.
package func makeVariantExpertStore(
    at path: String, layers: Int, experts: Int, rows: Int = 4, cols: Int = 64,
    variants: [ExpertPrecision] = [.q8_0, .q4_0], seed: UInt64 = 7
) throws -> WeightStore {
    let store = try WeightStore.create(at: path)
    var rng = SplitMix64(seed: seed)
    try store.write { w in
        for l in 0 ..< layers {
            for e in 0 ..< experts {
                for part in partNames {
                    let values = (0 ..< rows * cols).map { _ in
                        Float(Double(rng.next() % 20_001) / 10_000 - 1) * Float(1 + e % 3)
                    }
                    try values.withUnsafeBytes { b in
                        _ = try w.put(
                            "l\(l).e\(e).\(part)", model: "m", dtype: .f32, shape: [rows, cols], bytes: b,
                            codec: (l + e) % 2 == 0 ? .raw : .zstd,
                            expert: ExpertKey(layer: l, expert: e, part: part), variants: variants)
                    }
                }
            }
        }
    }
    try store.setModelInfo(ModelInfo(name: "m", layers: layers, expertsPerLayer: experts, topK: 2))
    return store
}

/// The bytes a copy of expert (`layer`, `expert`) at `precision` must hold, part by part
/// (name order), read straight from the store: the part's record, or its variant's blocks.
package func storedCopy(
    _ store: WeightStore, layer: Int, expert: Int, precision: ExpertPrecision
) throws -> [String: [UInt8]] {
    var out: [String: [UInt8]] = [:]
    for part in partNames {
        let key = ExpertKey(layer: layer, expert: expert, part: part)
        let has = try store.precisions(layer: layer, expert: expert, part: part, model: "m").contains(precision)
        out[part] =
            precision != .exact && has
            ? try store.readVariantBytes(precision, of: key, model: "m")
            : try store.readBytes("l\(layer).e\(expert).\(part)", model: "m")
    }
    return out
}
