import Testing
import WStoreCore
import WStoreReplay

@testable import WeightStore

/// Router probabilities as evidence: `forecast` (and so the default) weighs its soft bank
/// by how well the router's runners-up foretell later picks.
@Suite("Router scores: soft picks in forecast and the default")
struct RouterScoresTests {
    static let g = ResidencyGeometry(layers: 1, experts: 8, topK: 1)

    /// Feeds `tokens` tokens of one layer, top-1 among experts 0..<6 of 8, each followed by
    /// its router scores: the pick first, then a runner-up that is the next token's pick
    /// when `foretelling`, else expert 6 or 7, which are never picked (scores only when
    /// `report`). Returns the last token's pick and runner-up.
    @discardableResult
    static func feed(
        _ policy: any ResidencyPolicy, tokens: Int, foretelling: Bool, seed: UInt64, report: Bool = true
    ) -> (Int, Int) {
        var rng = SplitMix64(seed: seed)
        let picks = (0 ... tokens).map { _ in Int.random(in: 0 ..< 6, using: &rng) }
        var runnerUp = 0
        for t in 0 ..< tokens {
            policy.accessed(picks[t], hit: false)
            if foretelling {
                runnerUp = picks[t + 1] == picks[t] ? (picks[t] + 1) % 6 : picks[t + 1]
            } else {
                runnerUp = Int.random(in: 6 ..< 8, using: &rng)
            }
            let rest = (0 ..< 8).filter { $0 != picks[t] && $0 != runnerUp }
            if report {
                policy.scored([picks[t], runnerUp] + rest, probabilities: [0.5, 0.3] + rest.map { _ in 0.2 / 6 })
            }
        }
        return (picks[tokens - 1], runnerUp)
    }

    @Test func theSoftBankGainsWeightWhereRunnersUpForetellPicksAndFadesWhereTheyDoNot() {
        let told = ForecastPolicy(geometry: Self.g, capacity: 4)
        Self.feed(told, tokens: 2000, foretelling: true, seed: 3)
        let H = told.halfLives.count
        #expect(told.usesScores && told.weights(layer: 0).count == 2 * H)
        let toldSoft = told.weights(layer: 0)[H...].reduce(0, +)
        #expect(toldSoft > 0.5, "soft weight \(toldSoft) where the runner-up is the next pick")

        let blind = ForecastPolicy(geometry: Self.g, capacity: 4)
        Self.feed(blind, tokens: 2000, foretelling: false, seed: 3)
        let blindSoft = blind.weights(layer: 0)[H...].reduce(0, +)
        #expect(
            blindSoft < 0.5 && blindSoft < toldSoft / 2, "soft weight \(blindSoft) where runners-up are never picked")
    }

    @Test func theForetoldRunnerUpIsExpectedSoonerThanFromThePicksAlone() {
        let told = ForecastPolicy(geometry: Self.g, capacity: 8)
        let plain = ForecastPolicy(geometry: Self.g, capacity: 8)
        let (_, next) = Self.feed(told, tokens: 2000, foretelling: true, seed: 5)
        Self.feed(plain, tokens: 2000, foretelling: true, seed: 5, report: false)
        // The same picks: the runner-up, part of a pick for the told policy, is expected
        // sooner by it than by the policy that saw the picks alone.
        #expect(
            told.expectedWait(next) < plain.expectedWait(next),
            "\(told.expectedWait(next)) vs \(plain.expectedWait(next))")
        #expect(!plain.usesScores && plain.weights(layer: 0).count == plain.halfLives.count)

        // Scores of an empty list change nothing.
        let empty = ForecastPolicy(geometry: Self.g, capacity: 8)
        empty.scored([], probabilities: [])
        #expect(!empty.usesScores)
    }

    /// The default hears scores in the simulator, and on the recorded traces they help.
    @Test(
        .enabled(
            if: TraceReplayTests.smallTop4 != nil,
            "skipped: ../shared/data/routing/small-32e-top4.routing.jsonl is absent"))
    func theDefaultGainsFromTheRecordedRouterScores() throws {
        let trace = try RoutingTrace.load(path: try #require(TraceReplayTests.smallTop4))
        let g = trace.header.geometry
        let cap = g.count / 2
        func run(scores: Bool) -> ReplayResult {
            ResidencySimulator.run(
                trace, policy: ResidencyPolicyKind.default.make(geometry: g, capacity: cap), capacity: cap,
                scores: scores)
        }
        let with = run(scores: true), without = run(scores: false)
        #expect(with.hitRate > without.hitRate, "with scores \(with.hitRate), without \(without.hitRate)")
    }
}
