import Foundation
import WStoreReplay
import WStoreTestSupport

@testable import WeightStore

/// A trace from per-token expert lists (`tokens[t][l]`).
func handTrace(layers: Int, experts: Int, topK: Int, _ tokens: [[[Int]]], predicted: [[[Int]?]]? = nil) throws
    -> RoutingTrace
{
    var t = RoutingTrace(header: .init(layers: layers, experts: experts, topK: topK))
    for (i, tok) in tokens.enumerated() { try t.append(request: 0, experts: tok, predicted: predicted?[i]) }
    return t
}

/// A one-layer, top-1 trace from a sequence of experts.
func sequenceTrace(_ seq: [Int], experts: Int) throws -> RoutingTrace {
    try handTrace(layers: 1, experts: experts, topK: 1, seq.map { [[$0]] })
}

func hits(_ kind: ResidencyPolicyKind, _ trace: RoutingTrace, capacity: Int, prefetch: Bool = false) -> Int {
    let r = ResidencySimulator.run(
        trace, policy: kind.make(geometry: trace.header.geometry, capacity: capacity),
        capacity: capacity, prefetch: prefetch)
    return r.hits.reduce(0, +)
}
