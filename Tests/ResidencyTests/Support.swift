import WStoreReplay
import Foundation
@testable import WeightStore

/// A fresh temporary directory, removed when the value is released.
final class ScratchDir {
    let path: String
    init() {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("wstore-res-\(UUID().uuidString)").path
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// The byte at offset `i` of part `part` of expert (`layer`, `expert`) in ``makeExpertStore``.
func expectedByte(layer: Int, expert: Int, part: Int, at i: Int) -> UInt8 {
    UInt8(truncatingIfNeeded: layer &* 31 &+ expert &* 7 &+ part &* 3 &+ i &* 13 &+ (i >> 8))
}

let partNames = ["down", "gate", "up"]

/// A store with `layers × experts` experts of three bf16 parts, `elements` values each,
/// every byte predictable by ``expectedByte``; half the parts compressed, half raw.
func makeExpertStore(at path: String, layers: Int, experts: Int, elements: Int = 512, topK: Int = 2,
                     options: WeightStore.Options = WeightStore.Options()) throws -> WeightStore {
    let store = try WeightStore.create(at: path, options: options)
    try store.write { w in
        for l in 0 ..< layers {
            for e in 0 ..< experts {
                for (p, part) in partNames.enumerated() {
                    let bytes = (0 ..< elements * 2).map { expectedByte(layer: l, expert: e, part: p, at: $0) }
                    try bytes.withUnsafeBytes { b in
                        _ = try w.put("l\(l).e\(e).\(part)", model: "m", dtype: .bf16, shape: [elements], bytes: b,
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
func holdsExpectedBytes(_ h: borrowing ExpertHandle) -> Bool {
    for (p, part) in partNames.enumerated() {
        let ok = try? h.withBytes(part: part) { b in
            b.indices.allSatisfy { b[$0] == expectedByte(layer: h.layer, expert: h.expert, part: p, at: $0) }
        }
        guard ok == true else { return false }
    }
    return true
}

/// A trace from per-token expert lists (`tokens[t][l]`).
func handTrace(layers: Int, experts: Int, topK: Int, _ tokens: [[[Int]]], predicted: [[[Int]?]]? = nil) throws -> RoutingTrace {
    var t = RoutingTrace(header: .init(layers: layers, experts: experts, topK: topK))
    for (i, tok) in tokens.enumerated() { try t.append(request: 0, experts: tok, predicted: predicted?[i]) }
    return t
}

/// A one-layer, top-1 trace from a sequence of experts.
func sequenceTrace(_ seq: [Int], experts: Int) throws -> RoutingTrace {
    try handTrace(layers: 1, experts: experts, topK: 1, seq.map { [[$0]] })
}

func hits(_ kind: ResidencyPolicyKind, _ trace: RoutingTrace, capacity: Int, prefetch: Bool = false) -> Int {
    let r = ResidencySimulator.run(trace, policy: kind.make(geometry: trace.header.geometry, capacity: capacity),
                                   capacity: capacity, prefetch: prefetch)
    return r.hits.reduce(0, +)
}
