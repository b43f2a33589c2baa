import DequeModule
import Dispatch
import Foundation
import Synchronization
import WStoreCore

/// A byte-budgeted cache of MoE experts over a ``WeightStore``: what an engine calls on
/// every layer of every token.
///
///     let experts = try ResidencyManager(store: store, model: "mixtral", budget: 8 << 30)
///     let h = try experts.acquire(layer: 3, expert: 5)      // pinned until released
///     try h.withBytes(part: "up") { use($0) }               // read-only pages, lent to the closure
///     h.release()
///     let set = try experts.acquire(layer: 3, experts: [1, 5])  // a token's top-k, all or none
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
        /// Where loads read an expert's records from. The default reads them from the
        /// data file and then drops their pages from the page cache, so that, beside the
        /// budget, the store holds next to nothing in memory (`wstore bench cache
        /// --store` reports the bytes beyond the budget); ``ReadPath/file`` leaves them
        /// in the page cache, a second tier the kernel may reclaim.
        public var loadPath: ReadPath = .fileDropCache
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
    let room: RoomSignal
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
    /// - Throws: ``WStoreError/notFound(_:)`` when the model has no indexed experts,
    ///   ``ResidencyError/expertLargerThanBudget(layer:expert:bytes:budget:)`` when the
    ///   budget cannot hold the largest expert, or a store error.
    public init(store: WeightStore, model: String = WeightStore.defaultModel, budget: Int, options: Options = Options())
        throws
    {
        let layouts = try ResidencyManager.expertLayouts(store: store, model: model)
        let layers = (layouts.map(\.layer).max() ?? 0) + 1, experts = (layouts.map(\.expert).max() ?? 0) + 1
        let topK = (try? store.modelInfo(model))??.topK ?? 1
        let g = ResidencyGeometry(layers: layers, experts: experts, topK: max(1, min(topK, experts)))
        let largest = layouts.max { $0.layout.totalBytes < $1.layout.totalBytes }!
        guard largest.layout.totalBytes <= budget else {
            throw ResidencyError.expertLargerThanBudget(
                layer: largest.layer, expert: largest.expert,
                bytes: largest.layout.totalBytes, budget: budget)
        }
        let room = RoomSignal()
        var slots = [ExpertSlot?](repeating: nil, count: g.count)
        for e in layouts {
            let id = g.id(layer: e.layer, expert: e.expert)
            slots[id] = ExpertSlot(id: id, layer: e.layer, expert: e.expert, layout: e.layout, room: room)
        }
        self.store = store
        self.model = model
        self.budget = budget
        self.geometry = g
        self.options = options
        self.slots = slots
        self.room = room
        self.mask = ResidencyMask(geometry: g)
        self.expertBytes = largest.layout.totalBytes
        let capacity = max(1, budget / max(1, expertBytes))
        state = Mutex(
            State(
                policy: options.policy.make(geometry: g, capacity: capacity),
                phase: Array(repeating: .absent, count: g.count),
                queued: Array(repeating: false, count: g.count),
                layers: Array(repeating: .init(), count: layers)))
    }

    /// The layout of every indexed expert of `model`: its parts (in name order, each
    /// 64-byte aligned in one buffer) with their tensors, sizes, dtypes and shapes. This
    /// is what a manager would hold; it reads the index and the record headers only.
    /// - Throws: ``WStoreError/notFound(_:)`` when the model has no indexed experts, or a store error.
    package static func expertLayouts(store: WeightStore, model: String)
        throws -> [(layer: Int, expert: Int, layout: ExpertLayout)]
    {
        let entries = try store.experts(model: model)
        guard !entries.isEmpty else { throw WStoreError.notFound("indexed experts of model \(model)") }
        return try store.withSnapshot { s in
            try entries.map { entry in
                var parts: [ExpertLayout.Part] = []
                var offset = 0
                for name in entry.parts.keys.sorted() {
                    let tensor = entry.parts[name]!
                    let info = try s.info(tensor, model: model)
                    parts.append(
                        .init(
                            name: name, tensor: tensor, offset: offset, size: info.rawSize,
                            dtype: info.dtype, shape: info.shape))
                    offset += (info.rawSize + 63) & ~63
                }
                return (entry.layer, entry.expert, ExpertLayout(parts: parts, totalBytes: offset))
            }
        }
    }

    /// The layout of expert `expert` of layer `layer`, or `nil` when it is not indexed.
    public func layout(layer: Int, expert: Int) -> ExpertLayout? {
        guard layer >= 0, layer < geometry.layers, expert >= 0, expert < geometry.experts else { return nil }
        return slots[geometry.id(layer: layer, expert: expert)]?.layout
    }

    /// The experts that fit the budget, counting each as large as the largest.
    public var capacity: Int { budget / max(1, expertBytes) }

    // MARK: Acquire

    /// Returns expert `expert` of layer `layer`, pinned, loading it first if needed
    /// (blocking the calling thread; a wait for room sleeps until a release makes some).
    /// ``ExpertHandle/wasHit`` says whether it was resident.
    /// - Throws: ``ResidencyError``, or a store error from the load (a damaged record is
    ///   a checksum error, never wrong bytes).
    public func acquire(layer: Int, expert: Int) throws -> ExpertHandle {
        let (slot, hit) = try acquireSlot(layer: layer, expert: expert)
        return ExpertHandle(pinned: slot, hit: hit)
    }

    /// ``acquire(layer:expert:)`` for the C ABI: the pin is the caller's to give back
    /// (``ExpertSlot/unpin()``); returns the slot and whether it was a hit.
    @inline(__always)
    package func acquireSlot(layer: Int, expert: Int) throws -> (ExpertSlot, Bool) {
        let slot = try slotFor(layer: layer, expert: expert)
        if slot.pinIfResident() {
            recordFastHit(slot)
            return (slot, true)
        }
        var a = Attempt(slots: [slot])
        defer { addWait(layer: layer, since: a.start) }
        while let w = try advance(&a) { try w.wait(room) }
        return (slot, a.hits[0])
    }

    /// Returns expert `expert` of layer `layer`, pinned, loading it first if needed
    /// (suspending while another task or a prefetch loads it, or while the budget is all
    /// pinned). A load this call starts itself decodes on the calling task's thread.
    /// - Throws: ``ResidencyError``, or a store error from the load.
    public func acquire(layer: Int, expert: Int) async throws -> ExpertHandle {
        let slot = try slotFor(layer: layer, expert: expert)
        if slot.pinIfResident() {
            recordFastHit(slot)
            return ExpertHandle(pinned: slot, hit: true)
        }
        var a = Attempt(slots: [slot])
        defer { addWait(layer: layer, since: a.start) }
        while let w = try advance(&a) { try await w.value(room) }
        return ExpertHandle(pinned: slot, hit: a.hits[0])
    }

    /// Pins experts `experts` of layer `layer` all at once: room for the whole set is
    /// reserved together, and nothing of the set is held while waiting, so threads that
    /// each need a set never hold the parts of it another one needs.
    /// - Throws: ``ResidencyError/setLargerThanBudget(layer:experts:bytes:budget:)`` when
    ///   the set alone exceeds the budget, ``WStoreError/invalidArgument(_:)`` for an
    ///   expert listed twice, and what ``acquire(layer:expert:)`` throws.
    public func acquire(layer: Int, experts: [Int]) throws -> ExpertSet {
        let (slots, hits) = try acquirePinned(layer: layer, experts: experts)
        return ExpertSet(pinned: slots, hits: hits)
    }

    /// The async form of ``acquire(layer:experts:)``: suspends instead of blocking.
    public func acquire(layer: Int, experts: [Int]) async throws -> ExpertSet {
        let slots = try slotsFor(layer: layer, experts: experts)
        if pinAllIfResident(slots) { return ExpertSet(pinned: slots, hits: Array(repeating: true, count: slots.count)) }
        var a = Attempt(slots: slots)
        defer { addWait(layer: layer, since: a.start) }
        while let w = try advance(&a) { try await w.value(room) }
        return ExpertSet(pinned: a.slots, hits: a.hits)
    }

    /// ``acquire(layer:experts:)`` for the C ABI: the pins are the caller's to give back,
    /// one per slot (``ExpertHandle/init(pinned:hit:)``).
    package func acquirePinned(layer: Int, experts: [Int]) throws -> (slots: [ExpertSlot], hits: [Bool]) {
        let slots = try slotsFor(layer: layer, experts: experts)
        if pinAllIfResident(slots) { return (slots, Array(repeating: true, count: slots.count)) }
        var a = Attempt(slots: slots)
        defer { addWait(layer: layer, since: a.start) }
        while let w = try advance(&a) { try w.wait(room) }
        return (a.slots, a.hits)
    }

    /// Hints that layer `layer` will probably need `experts` soon: those not resident are
    /// loaded by background loaders, at most ``Options/loaders`` at a time. Returns at once.
    /// - Returns: the experts of the hint that are not in the expert index (ignored).
    @discardableResult
    public func prefetch(layer: Int, experts: some Sequence<Int>) -> [Int] {
        var unknown: [Int] = []
        let spawn = state.withLock { s -> Int in
            drainDeferred(&s)
            for e in experts {
                guard layer >= 0, layer < geometry.layers, e >= 0, e < geometry.experts,
                    slots[geometry.id(layer: layer, expert: e)] != nil
                else {
                    unknown.append(e)
                    continue
                }
                let id = geometry.id(layer: layer, expert: e)
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
        return unknown
    }

    /// Counters so far.
    public func stats() -> ResidencyStats {
        var out = state.withLock { s in
            ResidencyStats(
                layers: s.layers, coalescedWaits: s.coalescedWaits, droppedPrefetches: s.droppedPrefetches,
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

    private func slotFor(layer: Int, expert: Int) throws -> ExpertSlot {
        guard layer >= 0, layer < geometry.layers, expert >= 0, expert < geometry.experts,
            let slot = slots[geometry.id(layer: layer, expert: expert)]
        else {
            throw ResidencyError.notIndexed(layer: layer, expert: expert, model: model)
        }
        return slot
    }

    private func slotsFor(layer: Int, experts: [Int]) throws -> [ExpertSlot] {
        let slots = try experts.map { try slotFor(layer: layer, expert: $0) }
        for i in slots.indices {  // a token's top-k: a few, so no set
            for j in 0 ..< i where slots[j] === slots[i] {
                throw WStoreError.invalidArgument("expert \(slots[i].expert) of layer \(layer) is listed twice")
            }
        }
        let bytes = slots.reduce(0) { $0 + $1.layout.totalBytes }
        guard bytes <= budget else {
            throw ResidencyError.setLargerThanBudget(layer: layer, experts: experts, bytes: bytes, budget: budget)
        }
        return slots
    }

    /// The hit path of a set: pins every expert of it lock-free if all are resident (and
    /// records the hits), else pins none.
    private func pinAllIfResident(_ slots: [ExpertSlot]) -> Bool {
        for (i, s) in slots.enumerated() where !s.pinIfResident() {
            for j in 0 ..< i { slots[j].unpin() }
            return false
        }
        for s in slots { recordFastHit(s) }
        return true
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
        guard deferredPending.load(ordering: .relaxed), deferredPending.exchange(false, ordering: .acquiring) else {
            return
        }
        for case let slot? in slots {
            let n = slot.deferredHits.exchange(0, ordering: .relaxed)
            guard n > 0, case .resident = s.phase[slot.id] else { continue }
            for _ in 0 ..< min(n, 4) { s.policy.accessed(slot.id, hit: true) }
        }
    }

    /// One acquire of a set of experts (one expert for ``acquire(layer:expert:)``) in
    /// progress: ``advance(_:)`` runs it until every slot is pinned or it must wait.
    private struct Attempt {
        let slots: [ExpertSlot]
        var hits: [Bool]
        var counted = false
        let start = DispatchTime.now().uptimeNanoseconds

        init(slots: [ExpertSlot]) {
            self.slots = slots
            hits = Array(repeating: false, count: slots.count)
        }
    }

    /// What an attempt waits for before its next ``advance(_:)``: the only part of an
    /// acquire that differs between the blocking and the async forms.
    private enum Wait {
        /// Another acquire or a prefetch is loading an expert of the set.
        case load(LoadFuture)
        /// The budget is all pinned: sleep until a release or a failed load makes room,
        /// or until the deadline (uptime nanoseconds).
        case room(RoomSleeper, deadline: UInt64)
        /// Nothing: look again at once.
        case again

        func wait(_ signal: RoomSignal) throws {
            switch self {
            case .again: return
            case .load(let f): try f.wait()
            case let .room(s, deadline): if !s.wait(until: deadline) { signal.deregister(s) }
            }
        }

        func value(_ signal: RoomSignal) async throws {
            switch self {
            case .again: return
            case .load(let f): try await f.value()
            case let .room(s, deadline):
                await s.value(until: deadline)
                signal.deregister(s)
            }
        }
    }

    private enum Step {
        case done
        case wait(Wait)
        case load(pinned: [Int], loads: [(Int, LoadFuture)])
    }

    /// One locked pass of an acquire: pins what is resident; if any expert of the set is
    /// loading, gives the pins back and returns that load to wait for; else reserves room
    /// for every absent expert at once (evicting what the policy picks among unpinned
    /// experts) and loads them outside the lock. When there is no room, gives the pins
    /// back and returns a sleeper registered before the last check for room. Returns
    /// `nil` when every expert of the set is pinned.
    private func advance(_ a: inout Attempt) throws -> Wait? {
        let step = try state.withLock { s throws -> Step in
            drainDeferred(&s)
            var pinned: [Int] = [], need: [Int] = []
            var joining: LoadFuture?
            for (i, slot) in a.slots.enumerated() {
                if slot.pinIfResident() {
                    pinned.append(i)
                    if !a.counted {
                        a.hits[i] = true
                        slot.hits.wrappingAdd(1, ordering: .relaxed)
                        if slot.prefetchedUnused.exchange(false, ordering: .relaxed) {
                            slot.prefetchHits.wrappingAdd(1, ordering: .relaxed)
                        }
                        s.policy.accessed(slot.id, hit: true)
                    }
                    continue
                }
                if !a.counted {
                    s.layers[slot.layer].demandMisses += 1
                    s.policy.accessed(slot.id, hit: false)
                }
                switch s.phase[slot.id] {
                case .loading(let f): if joining == nil { joining = f }
                case .absent: need.append(i)
                case .resident:
                    // Resident but not pinnable: being evicted by this very lock holder is
                    // impossible, so this is a bug.
                    preconditionFailure("expert \(slot.id) resident with no pin word")
                }
            }
            a.counted = true
            if let joining {
                for i in pinned { a.slots[i].unpin() }
                s.coalescedWaits += 1
                return .wait(.load(joining))
            }
            guard !need.isEmpty else { return .done }
            let first = a.slots[need[0]]
            let bytes = need.reduce(0) { $0 + a.slots[$1].layout.totalBytes }
            let members = a.slots.map(\.id)
            if !makeRoom(&s, bytes: bytes, for: first.id, keeping: members) {
                for i in pinned { a.slots[i].unpin() }
                let exhausted = ResidencyError.budgetExhausted(
                    layer: first.layer, expert: first.expert, budget: budget,
                    pinnedBytes: pinnedBytes())
                guard case .wait(let timeout) = options.whenFull else { throw exhausted }
                let deadline = a.start + timeout.nanoseconds
                guard DispatchTime.now().uptimeNanoseconds < deadline else { throw exhausted }
                // Register, then look again: a release between the two is seen by one or the other.
                let sleeper = room.register()
                atomicMemoryFence(ordering: .sequentiallyConsistent)
                guard makeRoom(&s, bytes: bytes, for: first.id, keeping: members) else {
                    return .wait(.room(sleeper, deadline: deadline))
                }
                room.deregister(sleeper)
                // Room now: pin again what was resident before taking it.
                return .wait(.again)
            }
            var loads: [(Int, LoadFuture)] = []
            for i in need {
                let slot = a.slots[i]
                s.used += slot.layout.totalBytes
                s.policy.inserted(slot.id, prefetched: false)
                let f = LoadFuture()
                s.phase[slot.id] = .loading(f)
                loads.append((i, f))
            }
            s.peak = max(s.peak, s.used)
            precondition(s.used <= budget, "residency budget exceeded")
            return .load(pinned: pinned, loads: loads)
        }
        switch step {
        case .done: return nil
        case .wait(let w): return w
        case let .load(pinned, loads):
            var failure: (any Error)?
            var loaded: [Int] = []
            for (i, f) in loads {
                do {
                    try load(a.slots[i], future: f, forDemand: true)
                    loaded.append(i)
                } catch {
                    if failure == nil { failure = error }
                }
            }
            if let failure {
                for i in pinned + loaded { a.slots[i].unpin() }
                throw failure
            }
            return nil
        }
    }

    /// Bytes of experts pinned now (under the lock, for error messages).
    private func pinnedBytes() -> Int {
        slots.reduce(0) { acc, v in
            guard let v, v.pin.load(ordering: .relaxed) > 0 else { return acc }
            return acc + v.layout.totalBytes
        }
    }

    /// Evicts unpinned experts the policy picks, never one of `keeping` (the set being
    /// acquired), until `bytes` more fit the budget. Returns false when what is pinned
    /// leaves no room.
    private func makeRoom(_ s: inout State, bytes: Int, for id: Int, keeping: [Int] = []) -> Bool {
        while s.used + bytes > budget {
            let victim = s.policy.victim(for: id) { [slots] id in
                guard let v = slots[id], !keeping.contains(id) else { return true }
                return v.pin.load(ordering: .relaxed) != 0
            }
            guard let victim, let v = slots[victim] else { return false }
            // A hit may pin it between the check and here: the swap fails and we pick again.
            guard v.pin.compareExchange(expected: 0, desired: -1, ordering: .acquiringAndReleasing).exchanged else {
                continue
            }
            s.policy.removed(victim)
            s.phase[victim] = .absent
            mask.clear(victim)
            s.used -= v.layout.totalBytes
            s.evictions += 1
            if v.prefetchedUnused.exchange(false, ordering: .relaxed) { s.layers[v.layer].wastedPrefetches += 1 }
            v.freeBuffer()
        }
        return true
    }

    /// Makes room for `slot` and counts its bytes as used. Returns false when what is
    /// pinned leaves no room.
    private func reserve(_ s: inout State, _ slot: ExpertSlot, prefetched: Bool) -> Bool {
        guard makeRoom(&s, bytes: slot.layout.totalBytes, for: slot.id) else { return false }
        s.used += slot.layout.totalBytes
        s.peak = max(s.peak, s.used)
        precondition(s.used <= budget, "residency budget exceeded")
        s.policy.inserted(slot.id, prefetched: prefetched)
        return true
    }

    /// Loads `slot` (room already reserved, phase loading) outside the lock into pages
    /// made read-only once filled, and publishes it, pinned once for a demand acquirer.
    private func load(_ slot: ExpertSlot, future: LoadFuture, forDemand: Bool) throws {
        let layout = slot.layout
        let size = max(64, layout.totalBytes)
        do {
            let buffer = try ReadOnlyPages.allocate(size)
            do {
                try store.withSnapshot { s in
                    for p in layout.parts {
                        try s.read(
                            p.tensor, model: model,
                            into: UnsafeMutableRawBufferPointer(start: buffer + p.offset, count: p.size),
                            threads: options.decodeThreads, path: options.loadPath)
                    }
                }
            } catch {
                ReadOnlyPages.free(buffer, size)
                throw error
            }
            ReadOnlyPages.protect(buffer, size)
            slot.buffer = buffer
        } catch {
            state.withLock { s in
                s.phase[slot.id] = .absent
                s.used -= layout.totalBytes
                s.policy.removed(slot.id)
            }
            future.complete(error)
            room.wakeAll()
            throw error
        }
        state.withLock { s in
            s.phase[slot.id] = .resident
            mask.set(slot.id)
            if forDemand { s.layers[slot.layer].demandLoads += 1 } else { s.layers[slot.layer].prefetchLoads += 1 }
            s.layers[slot.layer].bytesLoaded += layout.totalBytes
            slot.prefetchedUnused.store(!forDemand, ordering: .relaxed)
            slot.pin.store(forDemand ? 1 : 0, ordering: .releasing)
        }
        future.complete(nil)
        // A prefetched expert is evictable at once: room for a waiter.
        if !forDemand, room.waiting.load(ordering: .sequentiallyConsistent) > 0 { room.wakeAll() }
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
            let slot = slots[geometry.id(layer: layer, expert: expert)]
        else { return false }
        return slot.pin.load(ordering: .relaxed) >= 0
    }
}

extension Duration {
    /// The duration in whole nanoseconds (negative durations count as 0).
    var nanoseconds: UInt64 {
        let (s, atto) = components
        return UInt64(max(0, s)) * 1_000_000_000 + UInt64(max(0, atto) / 1_000_000_000)
    }
}
