import WStoreCore
import Dispatch
import Foundation
import Synchronization
import Testing
@testable import WeightStore
import WStoreTestSupport

@Suite("Residency manager")
struct ResidencyManagerTests {
    @Test func acquireReturnsTheExpertsBytesAndCounts() throws {
        let dir = TemporaryDirectory()
        let store = try makeExpertStore(at: dir.path + "/s", layers: 2, experts: 3)
        let m = try ResidencyManager(store: store, model: "m", budget: 1 << 20)
        #expect(m.geometry == ResidencyGeometry(layers: 2, experts: 3, topK: 2))
        #expect(m.expertBytes == 3 * 1024)
        for _ in 0 ..< 2 {
            for l in 0 ..< 2 {
                for e in 0 ..< 3 {
                    let h = try m.acquire(layer: l, expert: e)
                    #expect(h.parts == partNames)
                    #expect(holdsExpectedBytes(h) == true)
                    #expect(Int(bitPattern: h.bytes.baseAddress!) % 64 == 0)
                }
            }
        }
        let s = m.stats().total
        #expect(s.demandMisses == 6 && s.demandHits == 6 && s.demandLoads == 6 && s.bytesLoaded == 6 * 3 * 1024)
        #expect(m.invariantViolation() == nil)
    }

    @Test func budgetIsNeverExceededAndEvictsByPolicy() throws {
        let dir = TemporaryDirectory()
        let store = try makeExpertStore(at: dir.path + "/s", layers: 2, experts: 4)
        for kind in ResidencyPolicyKind.allCases {
            var o = ResidencyManager.Options()
            o.policy = kind
            let m = try ResidencyManager(store: store, model: "m", budget: 3 * 3 * 1024, options: o)
            #expect(m.capacity == 3)
            var rng = SystemRandomNumberGenerator()
            for _ in 0 ..< 200 {
                let h = try m.acquire(layer: Int.random(in: 0 ..< 2, using: &rng), expert: Int.random(in: 0 ..< 4, using: &rng))
                #expect(holdsExpectedBytes(h) == true)
            }
            let s = m.stats()
            #expect(s.peakResidentBytes <= s.budget, "\(kind)")
            #expect(s.residentBytes == 3 * 3 * 1024, "\(kind)")
            #expect(s.evictions == s.total.demandLoads - 3, "\(kind)")
            #expect(m.invariantViolation() == nil, "\(kind)")
        }
    }

    @Test func pinnedExpertsAreNeverEvicted() throws {
        let dir = TemporaryDirectory()
        let store = try makeExpertStore(at: dir.path + "/s", layers: 1, experts: 8)
        let m = try ResidencyManager(store: store, model: "m", budget: 3 * 3 * 1024)
        let pinned = try m.acquire(layer: 0, expert: 0)
        for i in 0 ..< 40 { _ = try m.acquire(layer: 0, expert: 1 + i % 7) }
        #expect(m.isResident(layer: 0, expert: 0))
        #expect(holdsExpectedBytes(pinned) == true)
        pinned.release()
        for i in 0 ..< 10 { _ = try m.acquire(layer: 0, expert: 1 + i % 7) }
        #expect(!m.isResident(layer: 0, expert: 0))
        #expect(m.invariantViolation() == nil)
    }

    @Test func everythingPinnedFailsClearlyOrWaits() async throws {
        let dir = TemporaryDirectory()
        let store = try makeExpertStore(at: dir.path + "/s", layers: 1, experts: 4)
        var o = ResidencyManager.Options()
        o.whenFull = .fail
        let failing = try ResidencyManager(store: store, model: "m", budget: 2 * 3 * 1024, options: o)
        let a = try syncAcquire(failing, 0, 0), b = try syncAcquire(failing, 0, 1)
        #expect(throws: ResidencyError.budgetExhausted(layer: 0, expert: 2, budget: 6144, pinnedBytes: 6144)) {
            _ = try syncAcquire(failing, 0, 2)
        }
        a.release()
        let a2 = try syncAcquire(failing, 0, 2)
        #expect(holdsExpectedBytes(a2) == true)
        #expect(holdsExpectedBytes(b) == true)

        o.whenFull = .wait(timeout: .milliseconds(30))
        let timing = try ResidencyManager(store: store, model: "m", budget: 2 * 3 * 1024, options: o)
        let c = try syncAcquire(timing, 0, 0), d = try await timing.acquire(layer: 0, expert: 1)
        await #expect(throws: ResidencyError.self) { _ = try await timing.acquire(layer: 0, expert: 2) }

        c.release()
        d.release()
    }

    @Test func aLoadWaitsForARelease() throws {
        let dir = TemporaryDirectory()
        let store = try makeExpertStore(at: dir.path + "/s", layers: 1, experts: 4)
        var o = ResidencyManager.Options()
        o.whenFull = .wait(timeout: .seconds(20))
        let waiting = try ResidencyManager(store: store, model: "m", budget: 2 * 3 * 1024, options: o)
        let holding = DispatchSemaphore(value: 0), released = Counter()
        DispatchQueue.global().async {
            let e = try! syncAcquire(waiting, 0, 0)
            holding.signal()
            usleep(20_000)
            released.value.store(1, ordering: .releasing)
            e.release()
        }
        holding.wait()
        let f = try syncAcquire(waiting, 0, 1)
        let g = try syncAcquire(waiting, 0, 2)   // blocks until the other thread releases expert 0
        #expect(released.value.load(ordering: .acquiring) == 1)
        #expect(holdsExpectedBytes(g) == true)
        #expect(holdsExpectedBytes(f) == true)
        #expect(waiting.invariantViolation() == nil)
    }

    @Test func badRequestsAreErrors() throws {
        let dir = TemporaryDirectory()
        let store = try makeExpertStore(at: dir.path + "/s", layers: 1, experts: 2)
        let m = try ResidencyManager(store: store, model: "m", budget: 1000)
        #expect(throws: ResidencyError.expertLargerThanBudget(layer: 0, expert: 0, bytes: 3072, budget: 1000)) {
            _ = try m.acquire(layer: 0, expert: 0)
        }
        #expect(throws: ResidencyError.notIndexed(layer: 0, expert: 5, model: "m")) { _ = try m.acquire(layer: 0, expert: 5) }
        #expect(throws: WStoreError.self) { _ = try ResidencyManager(store: store, model: "nope", budget: 1 << 20) }
    }

    @Test func concurrentAcquiresOfOneExpertShareOneLoad() async throws {
        let dir = TemporaryDirectory()
        // Large, compressed experts so the load takes a while.
        let store = try makeExpertStore(at: dir.path + "/s", layers: 1, experts: 2, elements: 1 << 18)
        let m = try ResidencyManager(store: store, model: "m", budget: 1 << 24)
        let ok = Counter()
        await withTaskGroup(of: Void.self) { group in
            for i in 0 ..< 16 {
                group.addTask {
                    if i % 2 == 0 {
                        if let h = try? await m.acquire(layer: 0, expert: 1), holdsExpectedBytes(h) { ok.value.add(1, ordering: .relaxed) }
                    } else {
                        if let h = try? syncAcquire(m, 0, 1), holdsExpectedBytes(h) { ok.value.add(1, ordering: .relaxed) }
                    }
                }
            }
        }
        let s = m.stats()
        #expect(ok.value.load(ordering: .relaxed) == 16)
        #expect(s.total.demandLoads == 1)
        #expect(s.total.demandHits + s.total.demandMisses == 16)
        #expect(s.coalescedWaits == s.total.demandMisses - 1)

        // A demand acquire right after a prefetch of the same expert waits for that load.
        m.prefetch(layer: 0, experts: [0])
        let h = try await m.acquire(layer: 0, expert: 0)
        #expect(holdsExpectedBytes(h) == true)
        h.release()
        let t = m.stats().total
        #expect(t.demandLoads + t.prefetchLoads == 2)
    }

    @Test func prefetchLoadsInTheBackgroundAndCountsUseAndWaste() async throws {
        let dir = TemporaryDirectory()
        let store = try makeExpertStore(at: dir.path + "/s", layers: 2, experts: 4)
        let m = try ResidencyManager(store: store, model: "m", budget: 2 * 3 * 1024)
        m.prefetch(layer: 1, experts: [2, 3])
        await m.waitForPrefetches()
        #expect(m.isResident(layer: 1, expert: 2) && m.isResident(layer: 1, expert: 3))
        _ = try syncAcquire(m, 1, 2)           // a hit thanks to prefetch
        _ = try syncAcquire(m, 0, 0)           // evicts one of them; 3 was never used
        _ = try syncAcquire(m, 0, 1)
        let s = m.stats()
        #expect(s.layers[1].prefetchLoads == 2 && s.layers[1].prefetchHits == 1 && s.layers[1].demandHits == 1)
        #expect(s.layers[1].wastedPrefetches == 1)
        #expect(m.invariantViolation() == nil)
    }

    @Test func aHeldHandleDoesNotBlockAWriterGrowingTheMap() throws {
        let dir = TemporaryDirectory()
        var options = WeightStore.Options()
        options.initialMapSize = 1 << 20
        let store = try makeExpertStore(at: dir.path + "/s", layers: 1, experts: 2, options: options)
        let m = try ResidencyManager(store: store, model: "m", budget: 1 << 20)
        let h = try m.acquire(layer: 0, expert: 0)
        let before = store.mapSize
        let big = [UInt8](repeating: 7, count: 4 << 20)
        try big.withUnsafeBytes { _ = try store.put("big", model: "other", dtype: .u8, shape: [big.count], bytes: $0, codec: .raw) }
        #expect(store.mapSize > before)
        #expect(holdsExpectedBytes(h) == true)
    }

    @Test func stressKeepsInvariantsUnderConcurrentUse() async throws {
        let dir = TemporaryDirectory()
        let store = try makeExpertStore(at: dir.path + "/s", layers: 4, experts: 6, elements: 256)
        for kind in [ResidencyPolicyKind.lru, .adaptive, .shallow] {
            var o = ResidencyManager.Options()
            o.policy = kind
            o.whenFull = .wait(timeout: .milliseconds(5))
            let expert = 3 * 512
            let m = try ResidencyManager(store: store, model: "m", budget: 7 * expert, options: o)
            let bad = Counter(), exhausted = Counter(), done = Counter()
            let checking = Counter(1)
            let checker = Task.detached { () -> String? in
                while checking.value.load(ordering: .relaxed) == 1 {
                    if let v = m.invariantViolation() { return v }
                    try? await Task.sleep(for: .microseconds(200))
                }
                return m.invariantViolation()
            }
            await withTaskGroup(of: Void.self) { group in
                for worker in 0 ..< 8 {
                    group.addTask {
                        var rng = SplitMix64(seed: UInt64(worker + 1))
                        for _ in 0 ..< 400 {
                            let l = Int.random(in: 0 ..< 4, using: &rng), e = Int.random(in: 0 ..< 6, using: &rng)
                            switch Int.random(in: 0 ..< 10, using: &rng) {
                            case 0 ..< 2:
                                m.prefetch(layer: (l + 1) % 4, experts: [e, (e + 1) % 6])
                            case 2 ..< 6:
                                do {
                                    let h = try await m.acquire(layer: l, expert: e)
                                    if !holdsExpectedBytes(h) { bad.value.add(1, ordering: .relaxed) }
                                    // Hold a second expert at once sometimes.
                                    if let h2 = try? await m.acquire(layer: l, expert: (e + 2) % 6) {
                                        if !holdsExpectedBytes(h2) || !holdsExpectedBytes(h) { bad.value.add(1, ordering: .relaxed) }
                                    }
                                } catch ResidencyError.budgetExhausted {
                                    exhausted.value.add(1, ordering: .relaxed)
                                } catch { bad.value.add(1, ordering: .relaxed) }
                            default:
                                do {
                                    let h = try syncAcquire(m, l, e)
                                    if !holdsExpectedBytes(h) { bad.value.add(1, ordering: .relaxed) }
                                    await Task.yield()
                                    if !holdsExpectedBytes(h) { bad.value.add(1, ordering: .relaxed) }
                                } catch ResidencyError.budgetExhausted {
                                    exhausted.value.add(1, ordering: .relaxed)
                                } catch { bad.value.add(1, ordering: .relaxed) }
                            }
                            done.value.add(1, ordering: .relaxed)
                        }
                    }
                }
            }
            await m.waitForPrefetches()
            checking.value.store(0, ordering: .relaxed)
            let violation = await checker.value
            let s = m.stats()
            #expect(violation == nil, "\(kind): \(violation ?? "")")
            #expect(bad.value.load(ordering: .relaxed) == 0, "\(kind)")
            #expect(done.value.load(ordering: .relaxed) == 8 * 400)
            #expect(s.peakResidentBytes <= 7 * expert, "\(kind)")
            #expect(s.total.demandHits + s.total.demandMisses > 0)
            // Everything released: every resident expert can be evicted again.
            for l in 0 ..< 4 { for e in 0 ..< 6 { _ = try syncAcquire(m, l, e) } }
            #expect(m.invariantViolation() == nil, "\(kind)")
        }
    }
}

/// The blocking acquire, callable from async code (where `acquire` names the async form).
func syncAcquire(_ m: ResidencyManager, _ layer: Int, _ expert: Int) throws -> ExpertHandle {
    try m.acquire(layer: layer, expert: expert)
}

/// An atomic counter that closures can share.
final class Counter: Sendable {
    let value: Atomic<Int>
    init(_ initial: Int = 0) { value = Atomic(initial) }
}
