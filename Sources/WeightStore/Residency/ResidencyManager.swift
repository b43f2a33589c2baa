import Dispatch
import DequeModule
import Foundation
import Synchronization

/// A byte-budgeted cache of MoE experts over a ``WeightStore``: what an engine calls on
/// every layer of every token.
///
///     let experts = try ResidencyManager(store: store, model: "mixtral", budget: 8 << 30)
///     let h = try experts.acquire(layer: 3, expert: 5)      // pinned until released
///     use(h.bytes(part: "up")!)
///     h.release()
///     experts.prefetch(layer: 4, experts: [1, 6])           // a hint; loads in the background
///
/// - `acquire` returns a pinned ``ExpertHandle``; pinned experts are never evicted. A
///   resident expert is pinned lock-free and without allocating; the policy's
///   bookkeeping for the hit is applied at once if the manager's lock is free, or else
///   deferred to the next holder of the lock, so a hit never waits on another thread.
/// - A miss reserves room under the lock (evicting what the policy picks among unpinned
///   experts), loads outside it, and publishes. Concurrent acquires and prefetches of
///   one expert share one load.
/// - The budget is never exceeded: room is reserved before a load starts. When everything
///   is pinned a demand acquire waits for a release (up to a timeout) or fails with
///   ``ResidencyError/budgetExhausted(layer:expert:budget:pinnedBytes:)``; a prefetch is
///   dropped.
///
/// Safe to use from many threads and tasks at once.
public final class ResidencyManager: Sendable {
    /// What to do when a load needs room and every resident expert is pinned.
    public enum WhenFull: Sendable {
        /// Wait for releases, up to `timeout`, then fail.
        case wait(timeout: Duration)
        /// Fail at once.
        case fail
    }

    /// How a manager runs.
    public struct Options: Sendable {
        /// The replacement policy.
        public var policy: ResidencyPolicyKind = .default
        /// Background threads serving prefetch hints.
        public var loaders = 2
        /// Threads decoding one compressed tensor.
        public var decodeThreads = 1
        /// What a demand acquire does when the budget is all pinned.
        public var whenFull: WhenFull = .wait(timeout: .seconds(30))
        /// Default options.
        public init() {}
    }

    /// The store experts load from.
    public let store: WeightStore
    /// The model namespace.
    public let model: String
    /// The byte budget for resident (and in-flight) experts.
    public let budget: Int
    /// Layers × experts as indexed in the store.
    public let geometry: ResidencyGeometry
    /// Bytes of the largest expert.
    public let expertBytes: Int
    /// The options in force.
    public let options: Options
    let slots: [ExpertSlot?]
    /// Which experts are resident, readable lock-free (see ``residencyMask(layer:)``).
    let mask: ResidencyMask
    private let state: Mutex<State>
    private let deferredPending = Atomic<Bool>(false)

    private enum Phase { case absent, loading(LoadFuture), resident }

    private struct State {
        var policy: any ResidencyPolicy
        var phase: [Phase]
        var queued: [Bool]
        var queue = Deque<Int>()
        var activeLoaders = 0
        var used = 0
        var peak = 0
        var layers: [ResidencyStats.Layer]
        var coalescedWaits = 0
        var droppedPrefetches = 0
        var evictions = 0
    }

    /// Opens a manager over `model`'s expert index in `store` with `budget` bytes.
    /// - Throws: ``WStoreError/notFound(_:)`` when the model has no indexed experts, or a
    ///   store error.
    public init(store: WeightStore, model: String = WeightStore.defaultModel, budget: Int, options: Options = Options()) throws {
        let entries = try store.experts(model: model)
        guard !entries.isEmpty else { throw WStoreError.notFound("indexed experts of model \(model)") }
        let layers = (entries.map(\.layer).max() ?? 0) + 1, experts = (entries.map(\.expert).max() ?? 0) + 1
        let topK = (try? store.modelInfo(model))??.topK ?? 1
        let g = ResidencyGeometry(layers: layers, experts: experts, topK: max(1, min(topK, experts)))
        var slots = [ExpertSlot?](repeating: nil, count: g.count)
        try store.withSnapshot { s in
            for entry in entries {
                var parts: [ExpertLayout.Part] = []
                var offset = 0
                for name in entry.parts.keys.sorted() {
                    let tensor = entry.parts[name]!
                    let size = try s.info(tensor, model: model).rawSize
                    parts.append(.init(name: name, tensor: tensor, offset: offset, size: size))
                    offset += (size + 63) & ~63
                }
                let id = g.id(layer: entry.layer, expert: entry.expert)
                slots[id] = ExpertSlot(id: id, layer: entry.layer, expert: entry.expert,
                                       layout: ExpertLayout(parts: parts, totalBytes: offset))
            }
        }
        self.store = store
        self.model = model
        self.budget = budget
        self.geometry = g
        self.options = options
        self.slots = slots
        self.mask = ResidencyMask(geometry: g)
        self.expertBytes = slots.lazy.compactMap { $0?.layout.totalBytes }.max() ?? 0
        let capacity = max(1, budget / max(1, expertBytes))
        state = Mutex(State(policy: options.policy.make(geometry: g, capacity: capacity),
                            phase: Array(repeating: .absent, count: g.count),
                            queued: Array(repeating: false, count: g.count),
                            layers: Array(repeating: .init(), count: layers)))
    }

    /// The experts that fit the budget, counting each as large as the largest.
    public var capacity: Int { budget / max(1, expertBytes) }

    // MARK: Acquire

    /// Returns expert `expert` of layer `layer`, pinned, loading it first if needed
    /// (blocking the calling thread).
    /// - Throws: ``ResidencyError``, or a store error from the load (a damaged record is
    ///   a checksum error, never wrong bytes).
    public func acquire(layer: Int, expert: Int) throws -> ExpertHandle {
        let slot = try slotFor(layer: layer, expert: expert)
        if slot.pinIfResident() {
            recordFastHit(slot)
            return ExpertHandle(slot)
        }
        let start = DispatchTime.now().uptimeNanoseconds
        defer { addWait(layer: layer, since: start) }
        var counted = false
        while true {
            switch try step(slot, counted: &counted, demand: true) {
            case .pinned: return ExpertHandle(slot)
            case .wait(let f): try f.wait()
            case .load(let f): try load(slot, future: f, forDemand: true); return ExpertHandle(slot)
            case .full:
                try checkDeadline(slot, start: start)
                usleep(100)
            }
        }
    }

    /// Returns expert `expert` of layer `layer`, pinned, loading it first if needed
    /// (suspending while another task or a prefetch loads it, or while the budget is all
    /// pinned). A load this call starts itself decodes on the calling task's thread.
    /// - Throws: ``ResidencyError``, or a store error from the load.
    public func acquire(layer: Int, expert: Int) async throws -> ExpertHandle {
        let slot = try slotFor(layer: layer, expert: expert)
        if slot.pinIfResident() {
            recordFastHit(slot)
            return ExpertHandle(slot)
        }
        let start = DispatchTime.now().uptimeNanoseconds
        defer { addWait(layer: layer, since: start) }
        var counted = false
        while true {
            switch try step(slot, counted: &counted, demand: true) {
            case .pinned: return ExpertHandle(slot)
            case .wait(let f): try await f.value()
            case .load(let f): try load(slot, future: f, forDemand: true); return ExpertHandle(slot)
            case .full:
                try checkDeadline(slot, start: start)
                try await Task.sleep(for: .microseconds(200))
            }
        }
    }

    /// Hints that layer `layer` will probably need `experts` soon: those not resident are
    /// loaded by background loaders, at most ``Options/loaders`` at a time. Returns at once.
    /// Unknown experts are ignored.
    public func prefetch(layer: Int, experts: some Sequence<Int>) {
        let spawn = state.withLock { s -> Int in
            drainDeferred(&s)
            for e in experts {
                guard layer >= 0, layer < geometry.layers, e >= 0, e < geometry.experts else { continue }
                let id = geometry.id(layer: layer, expert: e)
                guard slots[id] != nil else { continue }
                s.policy.hinted(id)
                if case .absent = s.phase[id], !s.queued[id] {
                    s.queued[id] = true
                    s.queue.append(id)
                }
            }
            let n = max(0, min(options.loaders - s.activeLoaders, s.queue.count))
            s.activeLoaders += n
            return n
        }
        for _ in 0 ..< spawn { DispatchQueue.global().async { self.runLoader() } }
    }

    /// Counters so far.
    public func stats() -> ResidencyStats {
        var out = state.withLock { s in
            ResidencyStats(layers: s.layers, coalescedWaits: s.coalescedWaits, droppedPrefetches: s.droppedPrefetches,
                           evictions: s.evictions, residentBytes: s.used, peakResidentBytes: s.peak, budget: budget)
        }
        for case let slot? in slots {
            out.layers[slot.layer].demandHits += slot.hits.load(ordering: .relaxed)
            out.layers[slot.layer].prefetchHits += slot.prefetchHits.load(ordering: .relaxed)
            if slot.pin.load(ordering: .relaxed) >= 0 {
                out.layers[slot.layer].residentExperts += 1
                out.layers[slot.layer].residentBytes += slot.layout.totalBytes
            }
            if slot.prefetchedUnused.load(ordering: .relaxed) && slot.pin.load(ordering: .relaxed) >= 0 {
                out.unusedPrefetchesResident += 1
            }
        }
        return out
    }

    /// Waits until no prefetch is queued or loading (for benchmarks and tests).
    public func waitForPrefetches() async {
        while state.withLock({ $0.activeLoaders > 0 || !$0.queue.isEmpty }) {
            try? await Task.sleep(for: .microseconds(100))
        }
    }

    // MARK: Internals

    private enum Step { case pinned, wait(LoadFuture), load(LoadFuture), full }

    private func slotFor(layer: Int, expert: Int) throws -> ExpertSlot {
        guard layer >= 0, layer < geometry.layers, expert >= 0, expert < geometry.experts,
              let slot = slots[geometry.id(layer: layer, expert: expert)] else {
            throw ResidencyError.notIndexed(layer: layer, expert: expert, model: model)
        }
        guard slot.layout.totalBytes <= budget else {
            throw ResidencyError.expertLargerThanBudget(layer: layer, expert: expert, bytes: slot.layout.totalBytes, budget: budget)
        }
        return slot
    }

    @inline(__always) private func recordFastHit(_ slot: ExpertSlot) {
        slot.hits.wrappingAdd(1, ordering: .relaxed)
        if slot.prefetchedUnused.load(ordering: .relaxed), slot.prefetchedUnused.exchange(false, ordering: .relaxed) {
            slot.prefetchHits.wrappingAdd(1, ordering: .relaxed)
        }
        let applied: Void? = state.withLockIfAvailable { s in s.policy.accessed(slot.id, hit: true) }
        if applied == nil {
            slot.deferredHits.wrappingAdd(1, ordering: .relaxed)
            deferredPending.store(true, ordering: .releasing)
        }
    }

    /// Applies hits recorded while the lock was busy.
    private func drainDeferred(_ s: inout State) {
        guard deferredPending.load(ordering: .relaxed), deferredPending.exchange(false, ordering: .acquiring) else { return }
        for case let slot? in slots {
            let n = slot.deferredHits.exchange(0, ordering: .relaxed)
            guard n > 0, case .resident = s.phase[slot.id] else { continue }
            for _ in 0 ..< min(n, 4) { s.policy.accessed(slot.id, hit: true) }
        }
    }

    /// One locked step of a slow acquire: pin if resident by now, join an in-flight load,
    /// or reserve room and start one.
    private func step(_ slot: ExpertSlot, counted: inout Bool, demand: Bool) throws -> Step {
        try state.withLock { s throws -> Step in
            drainDeferred(&s)
            if slot.pinIfResident() {
                if !counted {
                    slot.hits.wrappingAdd(1, ordering: .relaxed)
                    if slot.prefetchedUnused.exchange(false, ordering: .relaxed) { slot.prefetchHits.wrappingAdd(1, ordering: .relaxed) }
                    s.policy.accessed(slot.id, hit: true)
                }
                return .pinned
            }
            if !counted {
                counted = true
                s.layers[slot.layer].demandMisses += 1
                s.policy.accessed(slot.id, hit: false)
            }
            switch s.phase[slot.id] {
            case .loading(let f):
                s.coalescedWaits += 1
                return .wait(f)
            case .resident:
                // Resident but not pinnable: being evicted by this very lock holder is
                // impossible, so this is a bug.
                preconditionFailure("expert \(slot.id) resident with no pin word")
            case .absent:
                guard reserve(&s, slot, prefetched: false) else { return .full }
                let f = LoadFuture()
                s.phase[slot.id] = .loading(f)
                return .load(f)
            }
        }
    }

    /// Makes room for `slot` by evicting unpinned experts the policy picks, then counts
    /// its bytes as used. Returns false when what is pinned leaves no room.
    private func reserve(_ s: inout State, _ slot: ExpertSlot, prefetched: Bool) -> Bool {
        let size = slot.layout.totalBytes
        while s.used + size > budget {
            let victim = s.policy.victim(for: slot.id) { [slots] id in
                guard let v = slots[id] else { return true }
                return v.pin.load(ordering: .relaxed) != 0
            }
            guard let victim, let v = slots[victim] else { return false }
            // A hit may pin it between the check and here: the swap fails and we pick again.
            guard v.pin.compareExchange(expected: 0, desired: -1, ordering: .acquiringAndReleasing).exchanged else { continue }
            s.policy.removed(victim)
            s.phase[victim] = .absent
            mask.clear(victim)
            s.used -= v.layout.totalBytes
            s.evictions += 1
            if v.prefetchedUnused.exchange(false, ordering: .relaxed) { s.layers[v.layer].wastedPrefetches += 1 }
            v.buffer?.deallocate()
            v.buffer = nil
        }
        s.used += size
        s.peak = max(s.peak, s.used)
        precondition(s.used <= budget, "residency budget exceeded")
        s.policy.inserted(slot.id, prefetched: prefetched)
        return true
    }

    /// Loads `slot` (room already reserved, phase loading) outside the lock and publishes
    /// it, pinned once for a demand acquirer.
    private func load(_ slot: ExpertSlot, future: LoadFuture, forDemand: Bool) throws {
        let layout = slot.layout
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: max(64, layout.totalBytes), alignment: 64)
        do {
            try store.withSnapshot { s in
                for p in layout.parts {
                    try s.read(p.tensor, model: model, into: UnsafeMutableRawBufferPointer(start: buffer + p.offset, count: p.size),
                               threads: options.decodeThreads)
                }
            }
        } catch {
            buffer.deallocate()
            state.withLock { s in
                s.phase[slot.id] = .absent
                s.used -= layout.totalBytes
                s.policy.removed(slot.id)
            }
            future.complete(error)
            throw error
        }
        slot.buffer = buffer
        state.withLock { s in
            s.phase[slot.id] = .resident
            mask.set(slot.id)
            if forDemand { s.layers[slot.layer].demandLoads += 1 } else { s.layers[slot.layer].prefetchLoads += 1 }
            s.layers[slot.layer].bytesLoaded += layout.totalBytes
            slot.prefetchedUnused.store(!forDemand, ordering: .relaxed)
            slot.pin.store(forDemand ? 1 : 0, ordering: .releasing)
        }
        future.complete(nil)
    }

    private func runLoader() {
        while true {
            enum Job { case none, skip, load(ExpertSlot, LoadFuture) }
            let job = state.withLock { s -> Job in
                drainDeferred(&s)
                guard let id = s.queue.popFirst() else {
                    s.activeLoaders -= 1
                    return .none
                }
                s.queued[id] = false
                guard case .absent = s.phase[id], let slot = slots[id] else { return .skip }
                guard reserve(&s, slot, prefetched: true) else {
                    s.droppedPrefetches += 1
                    return .skip
                }
                let f = LoadFuture()
                s.phase[id] = .loading(f)
                return .load(slot, f)
            }
            switch job {
            case .none: return
            case .skip: continue
            case let .load(slot, f): try? load(slot, future: f, forDemand: false)
            }
        }
    }

    private func checkDeadline(_ slot: ExpertSlot, start: UInt64) throws {
        let pinned = { self.state.withLock { s in
            self.slots.reduce(0) { acc, v in
                guard let v, v.pin.load(ordering: .relaxed) > 0 else { return acc }
                return acc + v.layout.totalBytes
            }
        } }
        switch options.whenFull {
        case .fail:
            throw ResidencyError.budgetExhausted(layer: slot.layer, expert: slot.expert, budget: budget, pinnedBytes: pinned())
        case .wait(let timeout):
            let (s, atto) = timeout.components
            let limit = UInt64(max(0, s)) * 1_000_000_000 + UInt64(max(0, atto) / 1_000_000_000)
            if DispatchTime.now().uptimeNanoseconds - start >= limit {
                throw ResidencyError.budgetExhausted(layer: slot.layer, expert: slot.expert, budget: budget, pinnedBytes: pinned())
            }
        }
    }

    private func addWait(layer: Int, since start: UInt64) {
        let ns = DispatchTime.now().uptimeNanoseconds - start
        state.withLock { $0.layers[layer].waitNanos += ns }
    }
}

extension ResidencyManager {
    /// Checks the manager's invariants under its lock (for tests): the bytes counted as
    /// used are those of experts resident or loading, within the budget, and every
    /// pinned expert is resident with a buffer. Returns a description of the first
    /// violation, or `nil`.
    package func invariantViolation() -> String? {
        state.withLock { s in
            var sum = 0
            for case let slot? in slots {
                let pins = slot.pin.load(ordering: .acquiring)
                switch s.phase[slot.id] {
                case .absent:
                    if pins >= 0 { return "expert \(slot.id) absent but pinnable (\(pins))" }
                case .loading:
                    sum += slot.layout.totalBytes
                    if pins >= 0 { return "expert \(slot.id) loading but pinnable" }
                case .resident:
                    sum += slot.layout.totalBytes
                    if pins < 0 { return "expert \(slot.id) resident but not pinnable" }
                    if slot.buffer == nil { return "expert \(slot.id) resident with no buffer" }
                }
            }
            if sum != s.used { return "used \(s.used) but experts add up to \(sum)" }
            if s.used > budget || s.peak > budget { return "used \(s.used), peak \(s.peak) over budget \(budget)" }
            return nil
        }
    }
}

extension ResidencyManager {
    /// Whether the expert is resident right now (a racy snapshot, for benchmarks that
    /// time hits apart from misses).
    package func isResident(layer: Int, expert: Int) -> Bool {
        guard layer >= 0, layer < geometry.layers, expert >= 0, expert < geometry.experts,
              let slot = slots[geometry.id(layer: layer, expert: expert)] else { return false }
        return slot.pin.load(ordering: .relaxed) >= 0
    }
}
