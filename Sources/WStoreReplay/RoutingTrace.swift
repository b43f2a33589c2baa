import WStoreCore
import WeightStore

/// A routing trace (format-spec/ROUTING-TRACE.md): which experts every token used in
/// every layer, and optionally which the engine predicted one layer ahead.
///
/// Stored flat: token `t`, layer `l` is group `t * layers + l` of ``experts`` and of
/// ``predicted`` and ``scores(token:layer:)`` (where a group of `-1` length means "none").
public struct RoutingTrace: Sendable {
    /// The header line.
    public var header: Header
    /// Request id of every token.
    public private(set) var requests: [Int] = []
    private var choiceStart: [Int32] = [0]
    private var choices: [Int32] = []
    private var predictionStart: [Int32] = [0]
    private var predictionCount: [Int32] = []
    private var predictions: [Int32] = []
    private var scoreStart: [Int32] = [0]
    private var scoreCount: [Int32] = []
    private var scoreExperts: [Int32] = []
    private var scoreValues: [Float] = []

    /// The header of a routing trace.
    public struct Header: Sendable, Hashable, Codable {
        /// Always `wstore.routing-trace`.
        public var kind: String = RoutingTrace.kind
        /// Format version; this build reads 1.
        public var version: Int = 1
        public var layers: Int
        public var experts: Int
        public var topK: Int
        /// Bytes of one expert, when the trace says.
        public var expertBytes: Int?
        /// The model the trace was taken from.
        public var model: String?
        /// Free text: where the trace comes from (synthetic traces say so here).
        public var note: String?

        /// A header for a `layers × experts`, top-`topK` trace.
        public init(
            layers: Int, experts: Int, topK: Int, expertBytes: Int? = nil, model: String? = nil, note: String? = nil
        ) {
            self.layers = layers
            self.experts = experts
            self.topK = topK
            self.expertBytes = expertBytes
            self.model = model
            self.note = note
        }

        enum CodingKeys: String, CodingKey {
            case kind, version, layers, experts, model, note
            case topK = "top_k"
            case expertBytes = "expert_bytes"
        }

        /// The geometry the trace routes over.
        public var geometry: ResidencyGeometry { ResidencyGeometry(layers: layers, experts: experts, topK: topK) }
    }

    /// The `kind` of every routing trace header.
    public static let kind = "wstore.routing-trace"

    /// An empty trace with `header`.
    public init(header: Header) { self.header = header }

    /// Tokens in the trace.
    public var tokenCount: Int { requests.count }
    /// Demand accesses in the trace (every expert of every layer of every token).
    public var accessCount: Int { choices.count }
    /// Whether any token carries predictions.
    public var hasPredictions: Bool { !predictions.isEmpty }

    /// The experts token `token` used in layer `layer`.
    public func experts(token: Int, layer: Int) -> ArraySlice<Int32> {
        let g = token * header.layers + layer
        return choices[Int(choiceStart[g]) ..< Int(choiceStart[g + 1])]
    }

    /// What the engine predicted for layer `layer` of token `token` while at the layer
    /// before; `nil` when the trace has no prediction there.
    public func predicted(token: Int, layer: Int) -> ArraySlice<Int32>? {
        let g = token * header.layers + layer
        let n = predictionCount[g]
        guard n >= 0 else { return nil }
        let s = Int(predictionStart[g])
        return predictions[s ..< s + Int(n)]
    }

    /// Whether any token carries router scores.
    public var hasScores: Bool { !scoreExperts.isEmpty }

    /// The router's top candidates for layer `layer` of token `token`, highest
    /// probability first; `nil` when the trace has no scores there.
    public func scores(token: Int, layer: Int) -> (experts: ArraySlice<Int32>, probabilities: ArraySlice<Float>)? {
        guard !scoreCount.isEmpty else { return nil }
        let g = token * header.layers + layer
        let n = scoreCount[g]
        guard n >= 0 else { return nil }
        let s = Int(scoreStart[g])
        return (scoreExperts[s ..< s + Int(n)], scoreValues[s ..< s + Int(n)])
    }

    /// Appends one token. `experts` has one list per layer; `predicted`, when given,
    /// one optional list per layer; `scores`, when given, one optional list of
    /// `(expert, probability)` pairs per layer, highest probability first.
    /// - Throws: ``RoutingTraceError`` naming what is wrong (line 0 here; the parser
    ///   adds the line).
    public mutating func append(
        request: Int, experts: [[Int]], predicted: [[Int]?]?,
        scores: [[(expert: Int, probability: Double)]?]? = nil
    ) throws {
        let L = header.layers, E = header.experts
        guard experts.count == L else {
            throw RoutingTraceError.malformed(line: 0, "\"experts\" has \(experts.count) layers, the header says \(L)")
        }
        if let predicted, predicted.count != L {
            throw RoutingTraceError.malformed(
                line: 0, "\"predicted\" has \(predicted.count) layers, the header says \(L)")
        }
        for (l, list) in experts.enumerated() {
            try Self.check(list, layer: l, experts: E, field: "experts")
        }
        for (l, list) in (predicted ?? []).enumerated() {
            if let list { try Self.check(list, layer: l, experts: E, field: "predicted") }
        }
        if let scores {
            guard scores.count == L else {
                throw RoutingTraceError.malformed(
                    line: 0, "\"scores\" has \(scores.count) layers, the header says \(L)")
            }
            for (l, list) in scores.enumerated() {
                guard let list else { continue }
                try Self.check(list.map(\.expert), layer: l, experts: E, field: "scores")
                for (i, pair) in list.enumerated() {
                    guard pair.probability >= 0, pair.probability <= 1 else {
                        throw RoutingTraceError.malformed(
                            line: 0,
                            "\"scores\"[\(l)] gives expert \(pair.expert) probability \(pair.probability), outside 0...1"
                        )
                    }
                    if i > 0, pair.probability > list[i - 1].probability {
                        throw RoutingTraceError.malformed(line: 0, "\"scores\"[\(l)] is not highest first")
                    }
                }
            }
        }
        // Scores are kept for every token once any token has them.
        if scores != nil && scoreCount.isEmpty && !requests.isEmpty {
            scoreCount = Array(repeating: -1, count: requests.count * L)
            scoreStart = Array(repeating: 0, count: requests.count * L + 1)
        }
        requests.append(request)
        for l in 0 ..< L {
            choices.append(contentsOf: experts[l].lazy.map { Int32($0) })
            choiceStart.append(Int32(choices.count))
            if let p = predicted?[l] {
                predictionCount.append(Int32(p.count))
                predictions.append(contentsOf: p.lazy.map { Int32($0) })
            } else {
                predictionCount.append(-1)
            }
            predictionStart.append(Int32(predictions.count))
            if scores != nil || !scoreCount.isEmpty {
                if let list = scores?[l] {
                    scoreCount.append(Int32(list.count))
                    scoreExperts.append(contentsOf: list.lazy.map { Int32($0.expert) })
                    scoreValues.append(contentsOf: list.lazy.map { Float($0.probability) })
                } else {
                    scoreCount.append(-1)
                }
                scoreStart.append(Int32(scoreExperts.count))
            }
        }
    }

    private static func check(_ list: [Int], layer: Int, experts: Int, field: String) throws {
        for e in list where e < 0 || e >= experts {
            throw RoutingTraceError.malformed(
                line: 0, "\"\(field)\"[\(layer)] names expert \(e), outside 0..<\(experts)")
        }
        if Set(list).count != list.count {
            throw RoutingTraceError.malformed(line: 0, "\"\(field)\"[\(layer)] names an expert twice")
        }
    }
}

/// A routing trace that cannot be read.
public enum RoutingTraceError: Error, CustomStringConvertible, Sendable, Equatable {
    /// Line `line` (1-based) is not what the format allows.
    case malformed(line: Int, String)
    /// The trace was written by a newer format version.
    case newerVersion(Int)
    /// The file has no header line.
    case empty

    public var description: String {
        switch self {
        case let .malformed(line, reason): "routing trace line \(line): \(reason.escapingControls)"
        case let .newerVersion(v):
            "routing trace line 1: version \(v) is newer than this build reads (1); upgrade wstore"
        case .empty: "routing trace line 1: the file is empty, expected a header"
        }
    }
}
