import Dispatch
import Foundation
import Synchronization
import Testing
import WStoreCore
import WStoreTestSupport

@testable import WeightStore

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
                    h.withBytes { #expect(Int(bitPattern: $0.baseAddress!) % 64 == 0) }
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
                let h = try m.acquire(
                    layer: Int.random(in: 0 ..< 2, using: &rng), expert: Int.random(in: 0 ..< 4, using: &rng))
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
        let g = try syncAcquire(waiting, 0, 2)  // blocks until the other thread releases expert 0
        #expect(released.value.load(ordering: .acquiring) == 1)
        #expect(holdsExpectedBytes(g) == true)
        #expect(holdsExpectedBytes(f) == true)
        #expect(waiting.invariantViolation() == nil)
    }

    @Test func badRequestsAreErrors() throws {
        let dir = TemporaryDirectory()
        let store = try makeExpertStore(at: dir.path + "/s", layers: 1, experts: 2)
        // A budget that cannot hold the largest expert is refused at open, not at the first acquire.
        #expect(throws: ResidencyError.expertLargerThanBudget(layer: 0, expert: 0, bytes: 3072, budget: 1000)) {
            _ = try ResidencyManager(store: store, model: "m", budget: 1000)
        }
        let m = try ResidencyManager(store: store, model: "m", budget: 3072)
        #expect(throws: ResidencyError.setLargerThanBudget(layer: 0, experts: [0, 1], bytes: 6144, budget: 3072)) {
            _ = try m.acquire(layer: 0, experts: [0, 1])
        }
        #expect(throws: WStoreError.invalidArgument("expert 1 of layer 0 is listed twice")) {
            _ = try m.acquire(layer: 0, experts: [1, 1])
        }
        #expect(m.prefetch(layer: 0, experts: [1, 7, -1]) == [7, -1])
        #expect(m.prefetch(layer: 3, experts: [0]) == [0])
        #expect(throws: ResidencyError.notIndexed(layer: 0, expert: 5, model: "m")) {
            _ = try m.acquire(layer: 0, expert: 5)
        }
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
                        if let h = try? await m.acquire(layer: 0, expert: 1), holdsExpectedBytes(h) {
                            ok.value.add(1, ordering: .relaxed)
                        }
                    } else {
                        if let h = try? syncAcquire(m, 0, 1), holdsExpectedBytes(h) {
                            ok.value.add(1, ordering: .relaxed)
                        }
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
        _ = try syncAcquire(m, 1, 2)  // a hit thanks to prefetch
        _ = try syncAcquire(m, 0, 0)  // evicts one of them; 3 was never used
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
        try big.withUnsafeBytes {
            _ = try store.put("big", model: "other", dtype: .u8, shape: [big.count], bytes: $0, codec: .raw)
        }
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
                                        if !holdsExpectedBytes(h2) || !holdsExpectedBytes(h) {
                                            bad.value.add(1, ordering: .relaxed)
                                        }
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

/// Sets of experts pinned at once, and waits that sleep until a release makes room.
@Suite struct AcquireManyTests {
    /// Four threads each pin a token's top-2 experts of one layer under a budget of four
    /// experts: with one-at-a-time acquires two threads can each hold half of what the
    /// other needs; sets pinned all-or-none always finish.
    @Test func fourThreadsTopTwoUnderABudgetOfFourExperts() throws {
        let dir = TemporaryDirectory()
        let store = try makeExpertStore(at: dir.path + "/s", layers: 2, experts: 8)
        let expert = 3 * 1024
        var o = ResidencyManager.Options()
        o.whenFull = .wait(timeout: .seconds(60))
        let m = try ResidencyManager(store: store, model: "m", budget: 4 * expert, options: o)
        let failures = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 4) { t in
            var rng = SplitMix64(seed: UInt64(t + 1))
            for token in 0 ..< 200 {
                let layer = token % 2
                let a = Int(rng.next() % 8)
                let b = (a + 1 + Int(rng.next() % 7)) % 8
                do {
                    let set = try m.acquire(layer: layer, experts: [a, b])
                    for i in 0 ..< 2 {
                        for (p, part) in partNames.enumerated() {
                            let ok = try set.withBytes(i, part: part) { bytes in
                                bytes.indices.allSatisfy {
                                    bytes[$0] == expectedByte(layer: layer, expert: [a, b][i], part: p, at: $0)
                                }
                            }
                            if !ok { failures.withLock { $0.append("thread \(t) token \(token): wrong bytes") } }
                        }
                    }
                    set.release()
                } catch {
                    failures.withLock { $0.append("thread \(t) token \(token): \(error)") }
                    return
                }
            }
        }
        #expect(failures.withLock { $0 } == [])
        #expect(m.invariantViolation() == nil)
        let s = m.stats()
        #expect(s.total.demandHits + s.total.demandMisses >= 4 * 200 * 2)
        #expect(s.peakResidentBytes <= 4 * expert)
    }

    /// A waiter for room is woken by the release that makes it, well before its timeout,
    /// and an acquire reports whether it hit.
    @Test func aWaiterWakesOnRelease() async throws {
        let dir = TemporaryDirectory()
        let store = try makeExpertStore(at: dir.path + "/s", layers: 1, experts: 4)
        var o = ResidencyManager.Options()
        o.whenFull = .wait(timeout: .seconds(600))
        let m = try ResidencyManager(store: store, model: "m", budget: 2 * 3 * 1024, options: o)
        let held = try await m.acquire(layer: 0, experts: [0, 1])
        #expect(!held.wasHit(0) && !held.wasHit(1))
        // A blocked thread (the sync form) waits on the room signal.
        let waiter = Task.detached { () throws -> Bool in
            let h = try { () throws -> ExpertHandle in try m.acquire(layer: 0, expert: 2) }()
            return h.wasHit
        }
        // The waiter cannot finish while both experts are pinned; releasing wakes it.
        try await Task.sleep(for: .milliseconds(50))
        held.release()
        #expect(try await waiter.value == false)
        let again = try await m.acquire(layer: 0, expert: 2)
        let hit = again.wasHit
        #expect(hit)
        again.release()
        let asyncSet = try await m.acquire(layer: 0, experts: [2, 3])
        #expect(asyncSet.wasHit(0) && !asyncSet.wasHit(1))
        #expect(m.invariantViolation() == nil)
    }

    @Test func partsCarryDTypeAndShape() throws {
        let dir = TemporaryDirectory()
        let store = try makeExpertStore(at: dir.path + "/s", layers: 1, experts: 2, elements: 100)
        let layouts = try ResidencyManager.expertLayouts(store: store, model: "m")
        #expect(layouts.count == 2)
        let m = try ResidencyManager(store: store, model: "m", budget: 1 << 20)
        let l = try #require(m.layout(layer: 0, expert: 1))
        #expect(l.parts.map(\.name) == partNames)
        #expect(l.parts.allSatisfy { $0.dtype == .bf16 && $0.shape == [100] && $0.size == 200 && $0.offset % 64 == 0 })
        #expect(l.totalBytes == 3 * 256)
        #expect(m.layout(layer: 0, expert: 2) == nil)
    }
}
