import Testing
import WStoreCore

@testable import WeightStore

/// ARC against its definition: Megiddo and Modha, "ARC: A Self-Tuning, Low Overhead
/// Replacement Cache" (FAST 2003), Figure 4, worked by hand on a short sequence and
/// written out plainly here for long ones.
@Suite("ARC as Megiddo and Modha define it")
struct ARCPolicyTests {
    /// What one demand access did: hit or not, the expert evicted, and `p` afterwards.
    struct Step: Equatable, CustomStringConvertible {
        var hit: Bool
        var victim: Int?
        var target: Double
        var description: String { "\(hit ? "hit" : "miss") evicts \(victim.map(String.init) ?? "-") p=\(target)" }
    }

    /// Figure 4 of the paper, one array per list, most recent first.
    struct PlainARC {
        let c: Int
        var t1: [Int] = [], t2: [Int] = [], b1: [Int] = [], b2: [Int] = []
        var p = 0.0

        init(capacity: Int) { c = capacity }

        /// REPLACE(x, p): the page leaving the cache, which becomes a ghost.
        mutating func replace(_ xInB2: Bool) -> Int {
            let n1 = Double(t1.count)
            if !t1.isEmpty && ((xInB2 && n1 == p) || n1 > p) {
                let v = t1.removeLast()
                b1.insert(v, at: 0)
                return v
            }
            let v = t2.removeLast()
            b2.insert(v, at: 0)
            return v
        }

        mutating func access(_ x: Int) -> Step {
            if let i = t1.firstIndex(of: x) {  // Case I
                t1.remove(at: i)
                t2.insert(x, at: 0)
                return Step(hit: true, victim: nil, target: p)
            }
            if let i = t2.firstIndex(of: x) {
                t2.remove(at: i)
                t2.insert(x, at: 0)
                return Step(hit: true, victim: nil, target: p)
            }
            var victim: Int?
            if let i = b1.firstIndex(of: x) {  // Case II
                let d = b1.count >= b2.count ? 1 : Double(b2.count) / Double(b1.count)
                p = min(p + d, Double(c))
                victim = replace(false)
                b1.remove(at: b1.firstIndex(of: x) ?? i)
                t2.insert(x, at: 0)
            } else if b2.contains(x) {  // Case III
                let d = b2.count >= b1.count ? 1 : Double(b1.count) / Double(b2.count)
                p = max(p - d, 0)
                victim = replace(true)
                b2.remove(at: b2.firstIndex(of: x)!)
                t2.insert(x, at: 0)
            } else {  // Case IV
                let l1 = t1.count + b1.count, l2 = t2.count + b2.count
                if l1 == c {
                    if t1.count < c {
                        b1.removeLast()
                        victim = replace(false)
                    } else {
                        victim = t1.removeLast()  // deleted, no ghost
                    }
                } else if l1 + l2 >= c {
                    if l1 + l2 == 2 * c { b2.removeLast() }
                    victim = replace(false)
                }
                t1.insert(x, at: 0)
            }
            return Step(hit: false, victim: victim, target: p)
        }
    }

    /// Drives `ARCPolicy` the way the simulator does and records every step.
    static func replay(_ seq: [Int], ids: Int, capacity: Int) -> [Step] {
        let arc = ARCPolicy(geometry: .init(layers: 1, experts: ids, topK: 1), capacity: capacity)
        var resident = Set<Int>()
        var steps: [Step] = []
        for x in seq {
            let hit = resident.contains(x)
            arc.accessed(x, hit: hit)
            var victim: Int?
            if !hit {
                if resident.count == capacity {
                    victim = arc.victim(for: x) { _ in false }
                    arc.removed(victim!)
                    resident.remove(victim!)
                }
                resident.insert(x)
                arc.inserted(x, prefetched: false)
            }
            steps.append(Step(hit: hit, victim: victim, target: arc.target))
        }
        return steps
    }

    @Test func aShortSequenceWorkedByHand() {
        // c = 2. 0 m, 1 m: T1 = [1 0]. 0 hit: T2 = [0]. 2 m (case IV-B): T1 holds 1 > p = 0,
        // so 1 goes to B1. 1 m on its B1 ghost: p = 1; T1 holds 1, not more than p, so T2's 0
        // goes to B2. 0 m on its B2 ghost: p = 0; T1's 2 goes to B1. 3 m (IV-B): T1 is empty,
        // T2's 1 goes to B2. 2 m on B1 (|B1| = |B2| = 1): p = 1, T2's 0 goes. 1 m on B2
        // (|B2| = 2 ≥ |B1| = 0): p = 0, T1's 3 goes.
        let got = Self.replay([0, 1, 0, 2, 1, 0, 3, 2, 1], ids: 4, capacity: 2)
        let want: [Step] = [
            .init(hit: false, victim: nil, target: 0), .init(hit: false, victim: nil, target: 0),
            .init(hit: true, victim: nil, target: 0), .init(hit: false, victim: 1, target: 0),
            .init(hit: false, victim: 0, target: 1), .init(hit: false, victim: 2, target: 0),
            .init(hit: false, victim: 1, target: 0), .init(hit: false, victim: 0, target: 1),
            .init(hit: false, victim: 3, target: 0),
        ]
        #expect(got == want)
        var plain = PlainARC(capacity: 2)
        #expect([0, 1, 0, 2, 1, 0, 3, 2, 1].map { plain.access($0) } == want)
    }

    @Test func aFullRecencyListDropsItsOldestWithoutAGhost() {
        // c = 2, all new: 0, 1 fill T1; 2 finds |T1| = c (case IV-A, T1 full): 0 is deleted
        // without a ghost, so the 0 that follows is a new miss, not a ghost hit, and p stays 0
        // through the whole scan.
        let seq = [0, 1, 2, 0, 1]
        var plain = PlainARC(capacity: 2)
        let want = seq.map { plain.access($0) }
        #expect(want.map(\.victim) == [nil, nil, 0, 1, 2])
        #expect(want.map(\.target) == [0, 0, 0, 0, 0])
        #expect(Self.replay(seq, ids: 3, capacity: 2) == want)
    }

    @Test func aFractionalStepComparesPExactly() throws {
        // p moves by |B2| / |B1| when B1 is the smaller ghost list (3 / 2 with c = 5), so fractions appear and
        // REPLACE compares |T1| with p itself. Take the first short random sequence (by
        // seed) that makes p fractional before |T1| meets it, and replay it.
        var found: [Int]?
        for seed in UInt64(1) ... 5000 where found == nil {
            var rng = SplitMix64(seed: seed)
            let seq = (0 ..< 80).map { _ in Int(rng.next() % 11) }
            var plain = PlainARC(capacity: 5)
            let steps = seq.map { plain.access($0) }
            if steps.contains(where: { $0.target != $0.target.rounded() }) { found = seq }
        }
        let seq = try #require(found, "no sequence moved p by a fraction")
        var plain = PlainARC(capacity: 5)
        #expect(Self.replay(seq, ids: 11, capacity: 5) == seq.map { plain.access($0) })
    }

    @Test(arguments: [(UInt64(1), 12, 4), (2, 20, 5), (3, 9, 3), (4, 40, 10)])
    func longSkewedSequencesMatchThePaper(seed: UInt64, ids: Int, capacity: Int) {
        // Phases of a few hot ids over a cold background, so that both ghost lists fill.
        var rng = SplitMix64(seed: seed)
        var seq: [Int] = []
        for phase in 0 ..< 20 {
            let hot = (0 ..< 3).map { (phase * 7 + $0 * 5) % ids }
            for _ in 0 ..< 100 {
                seq.append(rng.next() % 3 == 0 ? Int(rng.next() % UInt64(ids)) : hot[Int(rng.next() % 3)])
            }
        }
        var plain = PlainARC(capacity: capacity)
        let want = seq.map { plain.access($0) }
        let got = Self.replay(seq, ids: ids, capacity: capacity)
        #expect(got.count == want.count)
        let first = want.indices.first { got[$0] != want[$0] }
        #expect(
            first == nil,
            "first difference at access \(first ?? -1): \(first.map { "\(got[$0]) vs \(want[$0])" } ?? "")")
        #expect(want.contains { $0.hit } && want.contains { $0.target > 0 })
    }
}
