import Foundation
import Testing
import WStoreCore
import WStoreTestSupport

@testable import WeightStore

/// Whether every part of `h` holds `expected` (part name → bytes).
private func holds(_ h: borrowing ExpertHandle, _ expected: [String: [UInt8]]) -> Bool {
    h.parts.allSatisfy { part in
        (try? h.withBytes(part: part) { Array($0) == expected[part] }) == true
    }
}

@Suite("Residency manager: precision")
struct PrecisionTests {
    @Test func eachRequestGetsTheCopyItAcceptsAndTheHandleSaysWhich() throws {
        let dir = TemporaryDirectory()
        let store = try makeVariantExpertStore(at: dir.path + "/s", layers: 1, experts: 4)
        let m = try ResidencyManager(store: store, model: "m", budget: 1 << 20)
        #expect(m.precisions(layer: 0, expert: 1) == [.exact, .q8_0, .q4_0])
        let q4 = try #require(m.layout(layer: 0, expert: 1, precision: .q4_0))
        let q8 = try #require(m.layout(layer: 0, expert: 1, precision: .q8_0))
        let exact = try #require(m.layout(layer: 0, expert: 1))
        #expect(q4.totalBytes < q8.totalBytes && q8.totalBytes < exact.totalBytes)
        #expect(q4.parts.allSatisfy { $0.precision == .q4_0 && $0.dtype == .q4_0 && $0.shape == [4, 64] })

        // A miss under "at least q4_0" loads the smallest accepted copy: q4_0.
        do {
            let h = try m.acquire(layer: 0, expert: 1, precision: .atLeast(.q4_0))
            #expect(h.precision == .q4_0 && !h.wasHit)
            #expect(holds(h, try storedCopy(store, layer: 0, expert: 1, precision: .q4_0)))
        }
        #expect(m.stats().total.bytesLoaded == q4.totalBytes)
        // "At least q8_0" does not accept the resident q4_0: it loads q8_0.
        do {
            let h = try m.acquire(layer: 0, expert: 1, precision: .atLeast(.q8_0))
            #expect(h.precision == .q8_0 && !h.wasHit)
            #expect(holds(h, try storedCopy(store, layer: 0, expert: 1, precision: .q8_0)))
        }
        // "Fastest" takes the most precise resident copy.
        do {
            let h = try m.acquire(layer: 0, expert: 1, precision: .fastest())
            #expect(h.precision == .q8_0 && h.wasHit)
        }
        #expect(m.stats().residentBytes == q4.totalBytes + q8.totalBytes)
        // Exact (the default) loads the lossless copy, which supersedes the unpinned low-bit ones.
        do {
            let h = try m.acquire(layer: 0, expert: 1)
            #expect(h.precision == .exact && !h.wasHit)
            #expect(holds(h, try storedCopy(store, layer: 0, expert: 1, precision: .exact)))
        }
        #expect(m.stats().residentBytes == exact.totalBytes)
        let h = try m.acquire(layer: 0, expert: 1, precision: .fastest())
        #expect(h.precision == .exact && h.wasHit)
        #expect(m.stats().total.lowPrecisionHits == 1)
        #expect(m.stats().lowPrecisionLoads == 2)
        #expect(m.invariantViolation() == nil)
    }

    @Test func aStoreWithoutVariantsServesExactToEveryRequest() throws {
        let dir = TemporaryDirectory()
        let store = try makeVariantExpertStore(at: dir.path + "/s", layers: 1, experts: 2, variants: [])
        let m = try ResidencyManager(store: store, model: "m", budget: 1 << 20)
        #expect(m.precisions(layer: 0, expert: 0) == [.exact])
        let h = try m.acquire(layer: 0, expert: 0, precision: .fastest(upgrade: true))
        #expect(h.precision == .exact)
        let set = try m.acquire(layer: 0, experts: [0, 1], precision: .atLeast(.q4_0))
        #expect(set.precision(0) == .exact && set.precision(1) == .exact)
    }

    @Test func aSetIsPinnedAtMixedPrecisions() throws {
        let dir = TemporaryDirectory()
        let store = try makeVariantExpertStore(at: dir.path + "/s", layers: 1, experts: 4)
        let m = try ResidencyManager(store: store, model: "m", budget: 1 << 20)
        do { _ = try m.acquire(layer: 0, expert: 2) }  // exact resident
        let set = try m.acquire(layer: 0, experts: [2, 3], precision: .atLeast(.q8_0))
        #expect(set.precision(0) == .exact && set.wasHit(0))
        #expect(set.precision(1) == .q8_0 && !set.wasHit(1))
        #expect(m.invariantViolation() == nil)
    }

    @Test func dequantizedPartsStayWithinTheBlockBoundsOfTheExactValues() throws {
        let dir = TemporaryDirectory()
        let store = try makeVariantExpertStore(at: dir.path + "/s", layers: 1, experts: 2)
        let m = try ResidencyManager(store: store, model: "m", budget: 1 << 20)
        let exact: [Float] = try {
            let h = try m.acquire(layer: 0, expert: 1)
            #expect(try h.floats(part: "up") == h.withBytes(part: "up") { Array($0.bindMemory(to: Float.self)) })
            return try h.floats(part: "up")
        }()
        // Q8_0: d = amax/127, error <= d/2; Q4_0: d = amax/8 (signed), error <= d (the far
        // side clamps at 7d); plus |q| times the f16 rounding of d (relative 2^-11).
        for (precision, levels, error, qmax) in [(ExpertPrecision.q8_0, 127.0, 0.5, 127.0), (.q4_0, 8.0, 1.0, 8.0)] {
            // A manager of its own: the exact copy resident in `m` would be preferred.
            let low = try ResidencyManager(store: store, model: "m", budget: 1 << 20)
            let h = try low.acquire(layer: 0, expert: 1, precision: .atLeast(precision))
            #expect(h.precision == precision)
            let got = try h.floats(part: "up")
            #expect(got.count == exact.count)
            for b in stride(from: 0, to: exact.count, by: 32) {
                let block = exact[b ..< b + 32]
                let amax = Double(block.map { abs($0) }.max()!)
                let d = amax / levels
                let bound = d * (error + qmax / 2048) + 1e-7
                for i in block.indices { #expect(abs(Double(got[i] - exact[i])) <= bound, "\(precision) element \(i)") }
            }
            // Narrower outputs are the f32 values rounded.
            var half = [UInt16](repeating: 0, count: got.count), brain = [UInt16](repeating: 0, count: got.count)
            try half.withUnsafeMutableBytes { try h.dequantize(part: "up", into: $0, as: .f16) }
            try brain.withUnsafeMutableBytes { try h.dequantize(part: "up", into: $0, as: .bf16) }
            for i in got.indices {
                #expect(Float(Float16(bitPattern: half[i])) == Float(Float16(got[i])))
                let widened = Float(bitPattern: UInt32(brain[i]) << 16)
                #expect(abs(widened - got[i]) <= abs(got[i]) / 256)
            }
            var small = [Float](repeating: 0, count: 3)
            #expect(throws: WStoreError.self) { try small.withUnsafeMutableBytes { try h.dequantize(part: "up", into: $0, as: .f32) } }
            #expect(throws: WStoreError.self) { try small.withUnsafeMutableBytes { try h.dequantize(part: "up", into: $0, as: .i8) } }
            #expect(throws: WStoreError.self) { try h.floats(part: "nope") }
        }
    }

    @Test func anUpgradeLandsInANewBufferAndNeverChangesAPinnedCopy() throws {
        let dir = TemporaryDirectory()
        let store = try makeVariantExpertStore(at: dir.path + "/s", layers: 1, experts: 4)
        var options = ResidencyManager.Options()
        options.policy = .lru
        let m = try ResidencyManager(store: store, model: "m", budget: 1 << 20, options: options)
        let q4Bytes = try storedCopy(store, layer: 0, expert: 0, precision: .q4_0)
        let request = PrecisionRequest.atLeast(.q4_0, upgrade: true)
        // LRU's rule: the first use (a miss) and the next three (hits) stay low-bit.
        let first = try m.acquire(layer: 0, expert: 0, precision: request)
        #expect(first.precision == .q4_0)
        for _ in 0 ..< 3 {
            let h = try m.acquire(layer: 0, expert: 0, precision: request)
            #expect(h.precision == .q4_0 && h.wasHit)
            m.waitForBackgroundLoads()
        }
        #expect(m.stats().upgradeLoads == 0)
        // The fourth hit upgrades in the background; the pinned q4_0 copies keep their
        // bytes and their precision throughout.
        let second = try m.acquire(layer: 0, expert: 0, precision: request)
        #expect(second.precision == .q4_0 && second.wasHit)
        m.waitForBackgroundLoads()
        #expect(m.stats().upgradeLoads == 1)
        #expect(holds(first, q4Bytes) && holds(second, q4Bytes))
        #expect(first.precision == .q4_0)
        let third = try m.acquire(layer: 0, expert: 0, precision: request)
        #expect(third.precision == .exact && third.wasHit)
        #expect(holds(third, try storedCopy(store, layer: 0, expert: 0, precision: .exact)))
        let exactBytes = m.layout(layer: 0, expert: 0)!.totalBytes
        let q4Total = m.layout(layer: 0, expert: 0, precision: .q4_0)!.totalBytes
        // Both copies count while the old one is pinned; it goes once unpinned.
        #expect(m.stats().residentBytes == exactBytes + q4Total)
        first.release()
        second.release()
        _ = m.prefetch(layer: 0, experts: [Int]())  // any manager call sweeps
        #expect(m.stats().residentBytes == exactBytes)
        #expect(m.invariantViolation() == nil)
    }

    @Test func theBudgetCountsEachCopysRealSize() throws {
        let dir = TemporaryDirectory()
        let store = try makeVariantExpertStore(at: dir.path + "/s", layers: 2, experts: 8)
        var options = ResidencyManager.Options()
        options.policy = .lru
        options.whenFull = .fail
        let exact = try ResidencyManager.expertLayouts(store: store, model: "m")[0].layout.totalBytes
        let m = try ResidencyManager(store: store, model: "m", budget: exact, options: options)
        let q4 = m.layout(layer: 0, expert: 0, precision: .q4_0)!.totalBytes
        let fit = exact / q4
        #expect(fit >= 2, "the budget holds one exact expert and several q4_0 ones")
        for e in 0 ..< fit { _ = try m.acquire(layer: 0, expert: e, precision: .atLeast(.q4_0)) }
        #expect(m.stats().evictions == 0)
        #expect(m.stats().residentBytes == fit * q4)
        #expect(m.stats().layers[0].residentExperts == fit)
        _ = try m.acquire(layer: 0, expert: fit, precision: .atLeast(.q4_0))
        #expect(m.stats().evictions == 1)
        // An exact copy needs the whole budget: every unpinned low-bit copy goes.
        do {
            let h = try m.acquire(layer: 1, expert: 0)
            #expect(m.stats().residentBytes == exact)
            // Pinned, it leaves no room for even a q4_0 copy.
            #expect(throws: ResidencyError.self) { try m.acquire(layer: 1, expert: 1, precision: .fastest()) }
            _ = h
        }
        #expect(m.stats().peakResidentBytes <= exact)
        // A budget of one exact expert: its own unpinned q4_0 copy makes way for its exact one.
        do { _ = try m.acquire(layer: 1, expert: 3, precision: .atLeast(.q4_0)) }
        let whole = try m.acquire(layer: 1, expert: 3)
        #expect(whole.precision == .exact && m.stats().residentBytes == exact)
        #expect(m.invariantViolation() == nil)
    }

    @Test(arguments: [ResidencyPolicyKind.lru, .forecast, .adaptive, .leader])
    func upgradesNeverRaceWithPinnedReaders(policy: ResidencyPolicyKind) async throws {
        let dir = TemporaryDirectory()
        let layers = 2, experts = 6
        let store = try makeVariantExpertStore(at: dir.path + "/s", layers: layers, experts: experts)
        var expected: [[ExpertPrecision: [String: [UInt8]]]] = []
        for l in 0 ..< layers {
            for e in 0 ..< experts {
                var copies: [ExpertPrecision: [String: [UInt8]]] = [:]
                for p in ExpertPrecision.allCases { copies[p] = try storedCopy(store, layer: l, expert: e, precision: p) }
                expected.append(copies)
            }
        }
        var options = ResidencyManager.Options()
        options.policy = policy
        options.whenFull = .wait(timeout: .seconds(60))
        let exact = try ResidencyManager.expertLayouts(store: store, model: "m")[0].layout.totalBytes
        // Room for a few exact experts: upgrades evict, low-bit copies churn.
        let m = try ResidencyManager(store: store, model: "m", budget: exact * 4, options: options)
        let requests: [PrecisionRequest] = [
            .exact, .atLeast(.q4_0, upgrade: true), .fastest(upgrade: true), .atLeast(.q8_0, upgrade: true), .fastest(),
        ]
        let copies = expected
        let bad = await withTaskGroup(of: Int.self) { group in
            for t in 0 ..< 4 {
                group.addTask {
                    var rng = SplitMix64(seed: UInt64(t) &+ 11)
                    var bad = 0
                    for _ in 0 ..< 1000 {
                        let l = Int(rng.next() % UInt64(layers)), e = Int(rng.next() % UInt64(experts))
                        let request = requests[Int(rng.next() % UInt64(requests.count))]
                        guard let h = try? m.acquire(layer: l, expert: e, precision: request) else {
                            bad += 1
                            continue
                        }
                        if !request.accepts(h.precision) { bad += 1 }
                        let want = copies[l * experts + e][h.precision]!
                        // Read while pinned, give upgrades and evictions time to run, read again.
                        if !holds(h, want) { bad += 1 }
                        if rng.next() % 4 == 0 { usleep(200) }
                        if !holds(h, want) { bad += 1 }
                        if rng.next() % 3 == 0 { m.prefetch(layer: (l + 1) % layers, experts: [e], precision: request) }
                    }
                    return bad
                }
            }
            return await group.reduce(0, +)
        }
        #expect(bad == 0)
        m.waitForBackgroundLoads()
        #expect(m.invariantViolation() == nil)
        #expect(m.stats().peakResidentBytes <= exact * 4)
        #expect(m.stats().lowPrecisionLoads > 0)
        #expect(m.stats().upgradeLoads > 0, "upgrades ran under the readers")
        #expect(m.stats().evictions > 0)
    }
}
