import ArgumentParser
import Foundation
import WStoreCore
import WStoreReplay
import WeightStore

/// `wstore trace synth`: writes a synthetic routing trace, labelled synthetic.
struct TraceSynthCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "synth",
        abstract: "Write a synthetic routing trace shaped like real MoE routing (labelled synthetic in its header).")

    @Argument(help: "The trace file to write (JSON Lines).")
    var output: String

    @Option(help: "MoE layers.") var layers = 32
    @Option(help: "Routed experts per layer.") var experts = 16
    @Option(help: "Experts per token per layer.") var topK = 2
    @Option(help: "Requests, one after another.") var requests = 16
    @Option(help: "Tokens per request.") var tokens = 256
    @Option(help: "The most popular expert's share of a layer's picks, MIN,MAX (each layer draws from it).")
    var topShare = "0.15,0.30"
    @Option(help: "Chance a pick repeats one of the previous token's experts, FIRST,LAST layer.")
    var reuse = "0.25,0.60"
    @Option(help: "Chance a predicted expert is right, layer 1,LAST layer.")
    var accuracy = "0.75,0.92"
    @Option(help: "Boost of each request's 3 favoured experts per layer (1 = none).")
    var requestBias = 2.0
    @Flag(help: "Write no predictions.") var noPredictions = false
    @Option(help: "Bytes of one expert, for the header.") var expertBytes: Int?
    @Option(help: "Model name, for the header.") var model: String?
    @Option(help: "Random seed.") var seed: UInt64 = 1
    @Flag(help: "Print the measured facts as JSON.") var json = false

    func synth() throws -> TraceSynth {
        var s = TraceSynth()
        s.layers = layers
        s.experts = experts
        s.topK = topK
        s.requests = requests
        s.tokensPerRequest = tokens
        let share = try CacheBenchFormat.pair(topShare, "--top-share")
        guard share.0 <= share.1 else { throw ValidationError("--top-share: MIN must not exceed MAX") }
        s.topShare = share.0 ... share.1
        s.reuse = try CacheBenchFormat.pair(reuse, "--reuse")
        s.accuracy = try CacheBenchFormat.pair(accuracy, "--accuracy")
        s.requestBias = requestBias
        s.predictions = !noPredictions
        s.expertBytes = expertBytes
        s.model = model
        s.seed = seed
        do { try s.validate() } catch let e as WStoreError { throw ValidationError(e.description) }
        return s
    }

    func validate() throws { _ = try synth() }

    func run() throws {
        let trace = try synth().generate()
        let data = try trace.jsonLines()
        try Posix.writeAtomically(to: output) { put in try data.withUnsafeBytes { try put($0) } }
        let st = RoutingTraceStats(trace)
        let L = trace.header.layers
        if json {
            struct Out: Encodable {
                var path: String, layers: Int, experts: Int, top_k: Int, tokens: Int, accesses: Int, note: String?
                var top_share: [Double], reuse: [Double], chance_reuse: [Double], accuracy: [Double?]
            }
            let out = Out(
                path: output, layers: L, experts: trace.header.experts, top_k: trace.header.topK,
                tokens: trace.tokenCount, accesses: trace.accessCount, note: trace.header.note,
                top_share: st.topShare, reuse: st.reuse, chance_reuse: st.chanceReuse, accuracy: st.accuracy)
            try JSONOutput.print(out)
            return
        }
        print(
            "wrote \(output): \(trace.tokenCount) tokens × \(L) layers, \(trace.header.experts) experts, top-\(trace.header.topK) (synthetic)"
        )
        var rows = [["layer", "top share", "reuse", "chance reuse", "prediction accuracy"]]
        let shown = L <= 8 ? Array(0 ..< L) : [0, 1, L / 4, L / 2, 3 * L / 4, L - 1]
        for l in Set(shown).sorted() {
            rows.append([
                String(l), CacheBenchFormat.pct(st.topShare[l]), CacheBenchFormat.pct(st.reuse[l]),
                CacheBenchFormat.pct(st.chanceReuse[l]),
                st.accuracy[l].map(CacheBenchFormat.pct) ?? "-",
            ])
        }
        CacheBenchFormat.table(rows)
    }
}
