import WeightStore

/// The byte at offset `i` of part `part` of expert (`layer`, `expert`) in ``makeExpertStore``.
package func expectedByte(layer: Int, expert: Int, part: Int, at i: Int) -> UInt8 {
    UInt8(truncatingIfNeeded: layer &* 31 &+ expert &* 7 &+ part &* 3 &+ i &* 13 &+ (i >> 8))
}

package let partNames = ["down", "gate", "up"]

/// A store with `layers × experts` experts of three bf16 parts, `elements` values each,
/// every byte predictable by ``expectedByte``; half the parts compressed, half raw.
package func makeExpertStore(
    at path: String, layers: Int, experts: Int, elements: Int = 512, topK: Int = 2,
    options: WeightStore.Options = WeightStore.Options()
) throws -> WeightStore {
    let store = try WeightStore.create(at: path, options: options)
    try store.write { w in
        for l in 0 ..< layers {
            for e in 0 ..< experts {
                for (p, part) in partNames.enumerated() {
                    let bytes = (0 ..< elements * 2).map { expectedByte(layer: l, expert: e, part: p, at: $0) }
                    try bytes.withUnsafeBytes { b in
                        _ = try w.put(
                            "l\(l).e\(e).\(part)", model: "m", dtype: .bf16, shape: [elements], bytes: b,
                            codec: (l + e) % 2 == 0 ? .raw : .zstd, expert: ExpertKey(layer: l, expert: e, part: part))
                    }
                }
            }
        }
    }
    try store.setModelInfo(ModelInfo(name: "m", layers: layers, expertsPerLayer: experts, topK: topK))
    return store
}

/// Whether every part of `h` holds the bytes ``makeExpertStore`` wrote.
package func holdsExpectedBytes(_ h: borrowing ExpertHandle) -> Bool {
    for (p, part) in partNames.enumerated() {
        let ok = try? h.withBytes(part: part) { b in
            b.indices.allSatisfy { b[$0] == expectedByte(layer: h.layer, expert: h.expert, part: p, at: $0) }
        }
        guard ok == true else { return false }
    }
    return true
}
