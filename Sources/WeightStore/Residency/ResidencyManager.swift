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
/// Precision: an expert may be stored with low-bit variants beside its lossless record
/// (`wstore pack --expert-variants`). Every acquire takes a ``PrecisionRequest``
/// (``PrecisionRequest/exact`` when none is given); the handle says which copy it holds
/// (``ExpertHandle/precision``). Each resident copy counts its own bytes against the
/// budget; the policy sees one entry per expert (resident while any copy is), and
/// evicting an expert frees all its unpinned copies. The mixed-precision rule: a miss
/// under a low-bit request loads the smallest copy the request accepts; the expert is
/// upgraded to exact in the background only when the request allows it and the policy
/// calls the expert hot (``ResidencyPolicy/upgrades(_:)``: `lru` after four hits on its
/// low-bit copy, `forecast` and `adaptive` when its next use is expected within two tokens,
/// `leader` by the rule it follows, the others on the next upgrading use), so cold
/// experts stay low-bit and more of them fit. An upgrade loads the exact copy into a
/// new buffer; the low-bit copy is freed at once if unpinned, else by the first manager
/// call that finds it unpinned.
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
    /// The exact copy of each expert, by id; `nil` when not indexed.
    let slots: [ExpertSlot?]
    /// Every copy of every expert, by slot key.
    let allSlots: [ExpertSlot]
    /// The copies of each expert, most precise first (the exact one first).
    let variants: [[ExpertSlot]]
    let room: RoomSignal
    /// Which experts are resident, readable lock-free (see ``residencyMask(layer:)``).
    let mask: ResidencyMask
    private let state: Mutex<State>
    private let deferredPending = Atomic<Bool>(false)

    private enum Phase { case absent, loading(LoadFuture), resident }

    private struct State {
        var policy: any ResidencyPolicy
        /// By slot key.
        var phase: [Phase]
        /// By slot key: in `queue`.
        var queued: [Bool]
        /// By expert id: copies resident or loading (a policy member while positive).
        var held: [Int]
        /// Keys of low-bit copies whose expert's exact copy is resident: freed once unpinned.
        var superseded: [Int] = []
        var upgradeLoads = 0
        var lowPrecisionLoads = 0
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
        let lowBit = try ResidencyManager.variantLayouts(store: store, model: model, experts: layouts)
        var slots = [ExpertSlot?](repeating: nil, count: g.count)
        var variants = [[ExpertSlot]](repeating: [], count: g.count)
        var all: [ExpertSlot] = []
        for (i, e) in layouts.enumerated() {
            let id = g.id(layer: e.layer, expert: e.expert)
            let exact = ExpertSlot(
                id: id, key: all.count, precision: .exact, layer: e.layer, expert: e.expert, layout: e.layout,
                room: room)
            slots[id] = exact
            all.append(exact)
            variants[id] = [exact]
            for (precision, layout) in lowBit[i].sorted(by: { $0.0 > $1.0 }) {
                let v = ExpertSlot(
                    id: id, key: all.count, precision: precision, layer: e.layer, expert: e.expert,
                    layout: layout, room: room)
                all.append(v)
                variants[id].append(v)
            }
        }
        self.store = store
        self.model = model
        self.budget = budget
        self.geometry = g
        self.options = options
        self.slots = slots
        self.allSlots = all
        self.variants = variants
        self.room = room
        self.mask = ResidencyMask(geometry: g)
        self.expertBytes = largest.layout.totalBytes
        let capacity = max(1, budget / max(1, expertBytes))
        state = Mutex(
            State(
                policy: options.policy.make(geometry: g, capacity: capacity),
                phase: Array(repeating: .absent, count: all.count),
                queued: Array(repeating: false, count: all.count),
                held: Array(repeating: 0, count: g.count),
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
                            dtype: info.dtype, shape: info.shape, storedSize: info.storedSize))
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

    /// The precisions stored for expert `expert` of layer `layer`, most precise first
    /// (empty when it is not indexed).
    public func precisions(layer: Int, expert: Int) -> [ExpertPrecision] {
        guard layer >= 0, layer < geometry.layers, expert >= 0, expert < geometry.experts else { return [] }
        return variants[geometry.id(layer: layer, expert: expert)].map(\.precision)
    }

    /// The layout of expert `expert` of layer `layer` at `precision`, or `nil` when that
    /// copy is not stored.
    public func layout(layer: Int, expert: Int, precision: ExpertPrecision) -> ExpertLayout? {
        guard layer >= 0, layer < geometry.layers, expert >= 0, expert < geometry.experts else { return nil }
        return variants[geometry.id(layer: layer, expert: expert)].first { $0.precision == precision }?.layout
    }

    /// Returns expert `expert` of layer `layer`, pinned, at a precision `precision`
    /// accepts, loading it first if needed (blocking the calling thread; a wait for room
    /// sleeps until a release makes some). ``ExpertHandle/wasHit`` says whether it was
    /// resident, ``ExpertHandle/precision`` which copy it holds.
    /// - Throws: ``ResidencyError``, or a store error from the load (a damaged record is
    ///   a checksum error, never wrong bytes).
    public func acquire(layer: Int, expert: Int, precision: PrecisionRequest = .exact) throws -> ExpertHandle {
        let (slot, hit) = try acquireSlot(layer: layer, expert: expert, precision: precision)
        return ExpertHandle(pinned: slot, hit: hit)
    }

    /// ``acquire(layer:expert:precision:)`` for the C ABI: the pin is the caller's to give
    /// back (``ExpertSlot/unpin()``); returns the slot and whether it was a hit.
    @inline(__always)
    package func acquireSlot(layer: Int, expert: Int, precision: PrecisionRequest = .exact) throws -> (
        ExpertSlot, Bool
    ) {
        let slot = try slotFor(layer: layer, expert: expert)
        if let pinned = pinBest(slot, precision) {
            recordFastHit(pinned, precision)
            return (pinned, true)
        }
        var a = Attempt(slots: [slot], request: precision)
        defer { addWait(layer: layer, since: a.start) }
        while let w = try advance(&a) { try w.wait(room) }
        return (a.chosen[0]!, a.hits[0])
    }

    /// Returns expert `expert` of layer `layer`, pinned, at a precision `precision`
    /// accepts, loading it first if needed (suspending while another task or a prefetch
    /// loads it, or while the budget is all pinned). A load this call starts itself
    /// decodes on the calling task's thread.
    /// - Throws: ``ResidencyError``, or a store error from the load.
    public func acquire(layer: Int, expert: Int, precision: PrecisionRequest = .exact) async throws
        -> ExpertHandle
    {
        let slot = try slotFor(layer: layer, expert: expert)
        if let pinned = pinBest(slot, precision) {
            recordFastHit(pinned, precision)
            return ExpertHandle(pinned: pinned, hit: true)
        }
        var a = Attempt(slots: [slot], request: precision)
        defer { addWait(layer: layer, since: a.start) }
        while let w = try advance(&a) { try await w.value(room) }
        return ExpertHandle(pinned: a.chosen[0]!, hit: a.hits[0])
    }

    /// Pins experts `experts` of layer `layer` all at once, each at a precision
    /// `precision` accepts: room for the whole set is reserved together, and nothing of
    /// the set is held while waiting, so threads that each need a set never hold the
    /// parts of it another one needs.
    /// - Throws: ``ResidencyError/setLargerThanBudget(layer:experts:bytes:budget:)`` when
    ///   the set alone exceeds the budget, ``WStoreError/invalidArgument(_:)`` for an
    ///   expert listed twice, and what ``acquire(layer:expert:precision:)`` throws.
    public func acquire(layer: Int, experts: [Int], precision: PrecisionRequest = .exact) throws -> ExpertSet {
        let (slots, hits) = try acquirePinned(layer: layer, experts: experts, precision: precision)
        return ExpertSet(pinned: slots, hits: hits)
    }

    /// The async form of ``acquire(layer:experts:precision:)``: suspends instead of blocking.
    public func acquire(layer: Int, experts: [Int], precision: PrecisionRequest = .exact) async throws
        -> ExpertSet
    {
        let slots = try slotsFor(layer: layer, experts: experts, precision: precision)
        if let pinned = pinAllIfResident(slots, precision) {
            return ExpertSet(pinned: pinned, hits: Array(repeating: true, count: slots.count))
        }
        var a = Attempt(slots: slots, request: precision)
        defer { addWait(layer: layer, since: a.start) }
        while let w = try advance(&a) { try await w.value(room) }
        return ExpertSet(pinned: a.chosen.map { $0! }, hits: a.hits)
    }

    /// ``acquire(layer:experts:precision:)`` for the C ABI: the pins are the caller's to
    /// give back, one per slot (``ExpertHandle/init(pinned:hit:)``).
    package func acquirePinned(layer: Int, experts: [Int], precision: PrecisionRequest = .exact) throws -> (
        slots: [ExpertSlot], hits: [Bool]
    ) {
        let slots = try slotsFor(layer: layer, experts: experts, precision: precision)
        if let pinned = pinAllIfResident(slots, precision) {
            return (pinned, Array(repeating: true, count: slots.count))
        }
        var a = Attempt(slots: slots, request: precision)
        defer { addWait(layer: layer, since: a.start) }
        while let w = try advance(&a) { try w.wait(room) }
        return (a.chosen.map { $0! }, a.hits)
    }

    /// Hints that layer `layer` will probably need `experts` soon: those with no resident
    /// copy `precision` accepts are loaded (the smallest such copy) by background
    /// loaders, at most ``Options/loaders`` at a time. Returns at once.
    /// - Returns: the experts of the hint that are not in the expert index (ignored).
    @discardableResult
    public func prefetch(layer: Int, experts: some Sequence<Int>, precision: PrecisionRequest = .exact) -> [Int] {
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
                let accepted = variants[id].filter { precision.accepts($0.precision) }
                let busy = accepted.contains { v in
                    if case .absent = s.phase[v.key] { return s.queued[v.key] }
                    return true
                }
                if !busy, let target = accepted.last {
                    s.queued[target.key] = true
                    s.queue.append(target.key)
                }
            }
            return loadersToSpawn(&s)
        }
        for _ in 0 ..< spawn { DispatchQueue.global().async { self.runLoader() } }
        return unknown
    }

    /// Reports the router's candidates for the token layer `layer` just routed, with their
    /// probabilities (e.g. its top `2k`, the picked experts among them), after acquiring
    /// the picks. The policy takes them as evidence of how often each candidate is wanted:
    /// the default counts a runner-up the router nearly chose as part of a pick (see
    /// ``ForecastPolicy``), so experts the router keeps considering stay resident.
    /// Nothing is loaded or pinned; one pass under the manager's lock.
    /// - Returns: the experts that are not in the expert index (left out).
    /// - Precondition: `experts.count == probabilities.count`; every probability is finite
    ///   and not negative.
    @discardableResult
    public func observe(layer: Int, experts: [Int], probabilities: [Double]) -> [Int] {
        precondition(experts.count == probabilities.count, "experts and probabilities differ in length")
        precondition(
            probabilities.allSatisfy { $0.isFinite && $0 >= 0 }, "probabilities must be finite and not negative")
        var unknown: [Int] = []
        var ids: [Int] = []
        var known: [Double] = []
        for (e, p) in zip(experts, probabilities) {
            guard layer >= 0, layer < geometry.layers, e >= 0, e < geometry.experts,
                slots[geometry.id(layer: layer, expert: e)] != nil
            else {
                unknown.append(e)
                continue
            }
            ids.append(geometry.id(layer: layer, expert: e))
            known.append(p)
        }
        if !ids.isEmpty {
            state.withLock { s in
                drainDeferred(&s)
                s.policy.scored(ids, probabilities: known)
            }
        }
        return unknown
    }

    /// Counters so far.
    public func stats() -> ResidencyStats {
        var out = state.withLock { s in
            ResidencyStats(
                layers: s.layers, coalescedWaits: s.coalescedWaits, droppedPrefetches: s.droppedPrefetches,
                evictions: s.evictions, residentBytes: s.used, peakResidentBytes: s.peak, budget: budget,
                upgradeLoads: s.upgradeLoads, lowPrecisionLoads: s.lowPrecisionLoads)
        }
        for copies in variants where !copies.isEmpty {
            let layer = copies[0].layer
            var resident = false
            for slot in copies {
                let hits = slot.hits.load(ordering: .relaxed)
                out.layers[layer].demandHits += hits
                if slot.precision != .exact { out.layers[layer].lowPrecisionHits += hits }
                out.layers[layer].prefetchHits += slot.prefetchHits.load(ordering: .relaxed)
                if slot.pin.load(ordering: .relaxed) >= 0 {
                    resident = true
                    out.layers[layer].residentBytes += slot.layout.totalBytes
                    if slot.prefetchedUnused.load(ordering: .relaxed) { out.unusedPrefetchesResident += 1 }
                }
            }
            if resident { out.layers[layer].residentExperts += 1 }
        }
        return out
    }

    /// Waits until no prefetch or upgrade is queued or loading (for benchmarks and tests).
    public func waitForPrefetches() async {
        while state.withLock({ $0.activeLoaders > 0 || !$0.queue.isEmpty }) {
            try? await Task.sleep(for: .microseconds(100))
        }
    }

    /// Blocks until no prefetch or upgrade is queued or loading (for benchmarks and tests).
    public func waitForBackgroundLoads() {
        while state.withLock({ $0.activeLoaders > 0 || !$0.queue.isEmpty }) { usleep(100) }
    }

    // MARK: Internals

    /// The exact slot of an expert: its identity (its copies are ``variants``).
    private func slotFor(layer: Int, expert: Int) throws -> ExpertSlot {
        guard layer >= 0, layer < geometry.layers, expert >= 0, expert < geometry.experts,
            let slot = slots[geometry.id(layer: layer, expert: expert)]
        else {
            throw ResidencyError.notIndexed(layer: layer, expert: expert, model: model)
        }
        return slot
    }

    private func slotsFor(layer: Int, experts: [Int], precision: PrecisionRequest) throws -> [ExpertSlot] {
        let slots = try experts.map { try slotFor(layer: layer, expert: $0) }
        for i in slots.indices {  // a token's top-k: a few, so no set
            for j in 0 ..< i where slots[j] === slots[i] {
                throw WStoreError.invalidArgument("expert \(slots[i].expert) of layer \(layer) is listed twice")
            }
        }
        // The least the set can take: each expert's smallest accepted copy.
        let bytes = slots.reduce(0) { $0 + loadTarget($1, precision).layout.totalBytes }
        guard bytes <= budget else {
            throw ResidencyError.setLargerThanBudget(layer: layer, experts: experts, bytes: bytes, budget: budget)
        }
        return slots
    }

    /// The copy a miss under `request` loads: the smallest stored copy it accepts.
    @inline(__always) private func loadTarget(_ exact: ExpertSlot, _ request: PrecisionRequest) -> ExpertSlot {
        if request.isExact { return exact }
        return variants[exact.id].last { request.accepts($0.precision) } ?? exact
    }

    /// Pins the most precise resident copy of `exact`'s expert that `request` accepts;
    /// lock-free. The exact-only request touches one pin word, as before precision existed.
    @inline(__always) private func pinBest(_ exact: ExpertSlot, _ request: PrecisionRequest) -> ExpertSlot? {
        if exact.pinIfResident() { return exact }
        if request.isExact { return nil }
        for v in variants[exact.id].dropFirst() where request.accepts(v.precision) {
            if v.pinIfResident() { return v }
        }
        return nil
    }

    /// The hit path of a set: pins a copy of every expert of it lock-free if each has a
    /// resident one the request accepts (and records the hits), else pins none.
    private func pinAllIfResident(_ slots: [ExpertSlot], _ request: PrecisionRequest) -> [ExpertSlot]? {
        var pinned: [ExpertSlot] = []
        pinned.reserveCapacity(slots.count)
        for s in slots {
            guard let p = pinBest(s, request) else {
                for q in pinned { q.unpin() }
                return nil
            }
            pinned.append(p)
        }
        for p in pinned { recordFastHit(p, request) }
        return pinned
    }

    @inline(__always) private func recordFastHit(_ slot: ExpertSlot, _ request: PrecisionRequest) {
        slot.hits.wrappingAdd(1, ordering: .relaxed)
        if slot.prefetchedUnused.load(ordering: .relaxed), slot.prefetchedUnused.exchange(false, ordering: .relaxed) {
            slot.prefetchHits.wrappingAdd(1, ordering: .relaxed)
        }
        let lowUpgrading = request.upgrade && slot.precision != .exact
        let spawn: Int? = state.withLockIfAvailable { s in
            s.policy.accessed(slot.id, hit: true)
            return lowUpgrading ? considerUpgrade(&s, slot.id) : 0
        }
        if let spawn {
            for _ in 0 ..< spawn { DispatchQueue.global().async { self.runLoader() } }
        } else {
            // A low-bit hit whose upgrade is skipped here is considered on its next hit.
            slot.deferredHits.wrappingAdd(1, ordering: .relaxed)
            deferredPending.store(true, ordering: .releasing)
        }
    }

    /// Applies hits recorded while the lock was busy, and frees superseded low-bit copies
    /// no longer pinned.
    private func drainDeferred(_ s: inout State) {
        sweepSuperseded(&s)
        guard deferredPending.load(ordering: .relaxed), deferredPending.exchange(false, ordering: .acquiring) else {
            return
        }
        for slot in allSlots {
            let n = slot.deferredHits.exchange(0, ordering: .relaxed)
            guard n > 0, case .resident = s.phase[slot.key] else { continue }
            for _ in 0 ..< min(n, 4) { s.policy.accessed(slot.id, hit: true) }
        }
    }

    /// Queues the upgrade of `id` to its exact copy if it has none resident, loading or
    /// queued, and the policy calls it hot. Returns the loaders to spawn.
    private func considerUpgrade(_ s: inout State, _ id: Int) -> Int {
        guard let exact = slots[id], variants[id].count > 1, case .absent = s.phase[exact.key], !s.queued[exact.key],
            s.policy.upgrades(id)
        else { return 0 }
        s.queued[exact.key] = true
        s.queue.append(exact.key)
        return loadersToSpawn(&s)
    }

    /// Counts and returns the loaders to start for what is queued.
    private func loadersToSpawn(_ s: inout State) -> Int {
        let n = max(0, min(options.loaders - s.activeLoaders, s.queue.count))
        s.activeLoaders += n
        return n
    }

    /// Frees the superseded low-bit copies no handle pins any more.
    private func sweepSuperseded(_ s: inout State) {
        guard !s.superseded.isEmpty else { return }
        var left: [Int] = []
        for key in s.superseded {
            let v = allSlots[key]
            // Gone already, or its exact copy gone since (then it is an ordinary copy again).
            guard case .resident = s.phase[key], case .resident = s.phase[slots[v.id]!.key] else { continue }
            guard v.pin.compareExchange(expected: 0, desired: -1, ordering: .acquiringAndReleasing).exchanged else {
                left.append(key)
                continue
            }
            drop(&s, v)
        }
        s.superseded = left
    }

    /// Forgets copy `v` (its pin word already `-1`): its bytes leave the budget and its
    /// buffer is unmapped; the policy forgets the expert with its last copy.
    private func drop(_ s: inout State, _ v: ExpertSlot) {
        s.phase[v.key] = .absent
        v.held = false
        s.used -= v.layout.totalBytes
        s.held[v.id] -= 1
        if s.held[v.id] == 0 {
            s.policy.removed(v.id)
            mask.clear(v.id)
        }
        if v.prefetchedUnused.exchange(false, ordering: .relaxed) { s.layers[v.layer].wastedPrefetches += 1 }
        v.freeBuffer()
    }

    /// Counts copy `v` as held (its room already made): the policy learns of the expert
    /// with its first copy.
    private func hold(_ s: inout State, _ v: ExpertSlot, prefetched: Bool) {
        v.held = true
        s.used += v.layout.totalBytes
        s.peak = max(s.peak, s.used)
        precondition(s.used <= budget, "residency budget exceeded")
        s.held[v.id] += 1
        if s.held[v.id] == 1 { s.policy.inserted(v.id, prefetched: prefetched) }
    }

    /// One acquire of a set of experts (one expert for ``acquire(layer:expert:precision:)``)
    /// in progress: ``advance(_:)`` runs it until every expert has a pinned copy or it must wait.
    private struct Attempt {
        /// The experts' exact slots (their identities).
        let slots: [ExpertSlot]
        let request: PrecisionRequest
        /// The copy pinned for each expert, once pinned.
        var chosen: [ExpertSlot?]
        var hits: [Bool]
        var counted = false
        let start = DispatchTime.now().uptimeNanoseconds

        init(slots: [ExpertSlot], request: PrecisionRequest) {
            self.slots = slots
            self.request = request
            chosen = Array(repeating: nil, count: slots.count)
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
        case done(spawn: Int)
        case wait(Wait)
        case load(pinned: [Int], loads: [(Int, LoadFuture)], spawn: Int)
    }

    /// One locked pass of an acquire: pins, for every expert, the most precise resident
    /// copy the request accepts; if a copy it accepts is loading for any expert of the
    /// set, gives the pins back and returns that load to wait for; else reserves room for
    /// the smallest accepted copy of every expert left at once (evicting what the policy
    /// picks among unpinned experts) and loads them outside the lock. When there is no
    /// room, gives the pins back and returns a sleeper registered before the last check
    /// for room. Returns `nil` when every expert of the set is pinned.
    private func advance(_ a: inout Attempt) throws -> Wait? {
        let request = a.request
        let step = try state.withLock { s throws -> Step in
            drainDeferred(&s)
            var pinned: [Int] = [], need: [Int] = []
            var joining: LoadFuture?
            var spawn = 0
            for (i, slot) in a.slots.enumerated() {
                if let p = pinBest(slot, request) {
                    pinned.append(i)
                    a.chosen[i] = p
                    if !a.counted {
                        a.hits[i] = true
                        p.hits.wrappingAdd(1, ordering: .relaxed)
                        if p.prefetchedUnused.exchange(false, ordering: .relaxed) {
                            p.prefetchHits.wrappingAdd(1, ordering: .relaxed)
                        }
                        s.policy.accessed(slot.id, hit: true)
                        if request.upgrade && p.precision != .exact { spawn += considerUpgrade(&s, slot.id) }
                    }
                    continue
                }
                if !a.counted {
                    s.layers[slot.layer].demandMisses += 1
                    s.policy.accessed(slot.id, hit: false)
                }
                var loading = false
                for v in variants[slot.id] where request.accepts(v.precision) {
                    switch s.phase[v.key] {
                    case .loading(let f):
                        loading = true
                        if joining == nil { joining = f }
                    case .absent: break
                    case .resident:
                        // Resident but not pinnable: being evicted by this very lock holder
                        // is impossible, so this is a bug.
                        preconditionFailure("expert \(slot.id) resident with no pin word")
                    }
                    if loading { break }
                }
                if !loading { need.append(i) }
            }
            a.counted = true
            if let joining {
                for i in pinned { a.chosen[i]!.unpin() }
                s.coalescedWaits += 1
                return .wait(.load(joining))
            }
            guard !need.isEmpty else { return .done(spawn: spawn) }
            let targets = need.map { loadTarget(a.slots[$0], request) }
            let first = a.slots[need[0]]
            let bytes = targets.reduce(0) { $0 + $1.layout.totalBytes }
            let members = a.slots.map(\.id)
            if !makeRoom(&s, bytes: bytes, for: first.id, keeping: members) {
                for i in pinned { a.chosen[i]!.unpin() }
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
            for (i, target) in zip(need, targets) {
                hold(&s, target, prefetched: false)
                let f = LoadFuture()
                s.phase[target.key] = .loading(f)
                a.chosen[i] = target
                loads.append((i, f))
            }
            return .load(pinned: pinned, loads: loads, spawn: spawn)
        }
        switch step {
        case .done(let spawn):
            for _ in 0 ..< spawn { DispatchQueue.global().async { self.runLoader() } }
            return nil
        case .wait(let w): return w
        case let .load(pinned, loads, spawn):
            for _ in 0 ..< spawn { DispatchQueue.global().async { self.runLoader() } }
            var failure: (any Error)?
            var loaded: [Int] = []
            for (i, f) in loads {
                do {
                    try load(a.chosen[i]!, future: f, forDemand: true, upgrade: request.upgrade)
                    loaded.append(i)
                } catch {
                    if failure == nil { failure = error }
                }
            }
            if let failure {
                for i in pinned + loaded { a.chosen[i]!.unpin() }
                throw failure
            }
            return nil
        }
    }

    /// Bytes of copies pinned now (under the lock, for error messages).
    private func pinnedBytes() -> Int {
        allSlots.reduce(0) { acc, v in v.pin.load(ordering: .relaxed) > 0 ? acc + v.layout.totalBytes : acc }
    }

    /// Evicts unpinned experts the policy picks (every copy of each), never one of
    /// `keeping` (the set being acquired), until `bytes` more fit the budget. Superseded
    /// low-bit copies no longer pinned go first. Returns false when what is pinned
    /// leaves no room.
    private func makeRoom(_ s: inout State, bytes: Int, for id: Int, keeping: [Int] = []) -> Bool {
        if s.used + bytes > budget { sweepSuperseded(&s) }
        while s.used + bytes > budget {
            let victim = s.policy.victim(for: id) { [variants] id in
                guard !keeping.contains(id) else { return true }
                // Pinned, or loading: some copy held whose pin word is not 0.
                return variants[id].contains { $0.held && $0.pin.load(ordering: .relaxed) != 0 }
            }
            guard let victim else {
                // Last, copies of the set's own experts that the request does not accept
                // (a resident q4_0 copy of an expert asked for exact): those it accepts are
                // pinned by this pass, so only the others go.
                if dropUnaccepted(&s, of: keeping.isEmpty ? [id] : keeping) { continue }
                return false
            }
            let copies = variants[victim].filter { if case .resident = s.phase[$0.key] { true } else { false } }
            // A hit may pin a copy between the check and here: the swaps are undone and we pick again.
            var taken: [ExpertSlot] = []
            for v in copies {
                guard v.pin.compareExchange(expected: 0, desired: -1, ordering: .acquiringAndReleasing).exchanged
                else { break }
                taken.append(v)
            }
            guard taken.count == copies.count else {
                for v in taken { v.pin.store(0, ordering: .releasing) }
                continue
            }
            for v in copies { drop(&s, v) }
            s.evictions += 1
        }
        return true
    }

    /// Drops the unpinned resident copies of experts `ids`; returns whether any went.
    private func dropUnaccepted(_ s: inout State, of ids: [Int]) -> Bool {
        var dropped = false
        for id in ids {
            for v in variants[id] {
                guard case .resident = s.phase[v.key],
                    v.pin.compareExchange(expected: 0, desired: -1, ordering: .acquiringAndReleasing).exchanged
                else { continue }
                drop(&s, v)
                dropped = true
            }
        }
        return dropped
    }

    /// Makes room for copy `slot` and counts its bytes as used. Returns false when what
    /// is pinned leaves no room.
    private func reserve(_ s: inout State, _ slot: ExpertSlot, prefetched: Bool) -> Bool {
        guard makeRoom(&s, bytes: slot.layout.totalBytes, for: slot.id) else { return false }
        hold(&s, slot, prefetched: prefetched)
        return true
    }

    /// Loads copy `slot` (room already reserved, phase loading) outside the lock into
    /// pages made read-only once filled, and publishes it, pinned once for a demand
    /// acquirer. An exact copy supersedes the expert's low-bit ones; a low-bit copy a
    /// demand acquirer may upgrade is considered for its upgrade.
    private func load(
        _ slot: ExpertSlot, future: LoadFuture, forDemand: Bool, upgrade: Bool = false, isUpgrade: Bool = false
    ) throws {
        let layout = slot.layout
        let size = max(64, layout.totalBytes)
        do {
            let buffer = try ReadOnlyPages.allocate(size)
            do {
                try store.withSnapshot { s in
                    if slot.precision == .exact {
                        try s.prepareToRead(layout.parts.map(\.tensor), model: model)
                        for p in layout.parts {
                            try s.read(
                                p.tensor, model: model,
                                into: UnsafeMutableRawBufferPointer(start: buffer + p.offset, count: p.size),
                                threads: options.decodeThreads, path: options.loadPath)
                        }
                    } else {
                        try readVariant(s, slot, into: buffer)
                    }
                }
            } catch {
                ReadOnlyPages.free(buffer, size)
                throw error
            }
            ReadOnlyPages.protect(buffer, size)
            slot.buffer = buffer
        } catch {
            state.withLock { s in drop(&s, slot) }
            future.complete(error)
            room.wakeAll()
            throw error
        }
        let spawn = state.withLock { s -> Int in
            s.phase[slot.key] = .resident
            mask.set(slot.id)
            if forDemand {
                s.layers[slot.layer].demandLoads += 1
            } else if isUpgrade {
                s.upgradeLoads += 1
            } else {
                s.layers[slot.layer].prefetchLoads += 1
            }
            s.layers[slot.layer].bytesLoaded += layout.totalBytes
            s.layers[slot.layer].bytesRead += layout.storedBytes
            if slot.precision != .exact { s.lowPrecisionLoads += 1 }
            slot.prefetchedUnused.store(!forDemand && !isUpgrade, ordering: .relaxed)
            slot.pin.store(forDemand ? 1 : 0, ordering: .releasing)
            let exactResident: Bool
            if slot.precision == .exact {
                exactResident = true
                s.policy.held(slot.id, at: .exact)
            } else {
                exactResident = { if case .resident = s.phase[slots[slot.id]!.key] { true } else { false } }()
                if !exactResident { s.policy.held(slot.id, at: slot.precision) }
            }
            if exactResident {
                for v in variants[slot.id].dropFirst() where !s.superseded.contains(v.key) {
                    if case .resident = s.phase[v.key] { s.superseded.append(v.key) }
                }
                sweepSuperseded(&s)
                return 0
            }
            return forDemand && upgrade ? considerUpgrade(&s, slot.id) : 0
        }
        future.complete(nil)
        for _ in 0 ..< spawn { DispatchQueue.global().async { self.runLoader() } }
        // A prefetched copy is evictable at once, and a superseded one may be gone: room for a waiter.
        if !forDemand || slot.precision == .exact, room.waiting.load(ordering: .sequentiallyConsistent) > 0 {
            room.wakeAll()
        }
    }

    private func runLoader() {
        while true {
            enum Job { case none, skip, load(ExpertSlot, LoadFuture, isUpgrade: Bool) }
            let job = state.withLock { s -> Job in
                drainDeferred(&s)
                guard let key = s.queue.popFirst() else {
                    s.activeLoaders -= 1
                    return .none
                }
                s.queued[key] = false
                let slot = allSlots[key]
                guard case .absent = s.phase[key] else { return .skip }
                // A low-bit hint whose expert got a copy meanwhile is done; an exact copy
                // goes ahead (a hint, or an upgrade while a low-bit copy is held).
                if slot.precision != .exact, s.held[slot.id] > 0 { return .skip }
                let isUpgrade = s.held[slot.id] > 0
                guard reserve(&s, slot, prefetched: !isUpgrade) else {
                    s.droppedPrefetches += 1
                    return .skip
                }
                let f = LoadFuture()
                s.phase[key] = .loading(f)
                return .load(slot, f, isUpgrade: isUpgrade)
            }
            switch job {
            case .none: return
            case .skip: continue
            case let .load(slot, f, isUpgrade): try? load(slot, future: f, forDemand: false, isUpgrade: isUpgrade)
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
    /// used are those of copies resident or loading, within the budget; every pinned
    /// copy is resident with a buffer; each expert's count of held copies is right.
    /// Returns a description of the first violation, or `nil`.
    package func invariantViolation() -> String? {
        state.withLock { s in
            var sum = 0
            var held = Array(repeating: 0, count: geometry.count)
            for slot in allSlots {
                let pins = slot.pin.load(ordering: .acquiring)
                switch s.phase[slot.key] {
                case .absent:
                    if pins >= 0 { return "copy \(slot.key) of expert \(slot.id) absent but pinnable (\(pins))" }
                    if slot.held { return "copy \(slot.key) of expert \(slot.id) absent but held" }
                case .loading:
                    sum += slot.layout.totalBytes
                    held[slot.id] += 1
                    if pins >= 0 { return "copy \(slot.key) of expert \(slot.id) loading but pinnable" }
                case .resident:
                    sum += slot.layout.totalBytes
                    held[slot.id] += 1
                    if pins < 0 { return "copy \(slot.key) of expert \(slot.id) resident but not pinnable" }
                    if slot.buffer == nil { return "copy \(slot.key) of expert \(slot.id) resident with no buffer" }
                }
            }
            if held != s.held { return "held copies per expert disagree with the phases" }
            if sum != s.used { return "used \(s.used) but copies add up to \(sum)" }
            if s.used > budget || s.peak > budget { return "used \(s.used), peak \(s.peak) over budget \(budget)" }
            return nil
        }
    }
}

extension ResidencyManager {
    /// Whether the expert has a resident copy `precision` accepts right now (a racy
    /// snapshot, for benchmarks that time hits apart from misses).
    package func isResident(layer: Int, expert: Int, precision: PrecisionRequest = .exact) -> Bool {
        guard layer >= 0, layer < geometry.layers, expert >= 0, expert < geometry.experts else { return false }
        return variants[geometry.id(layer: layer, expert: expert)].contains {
            precision.accepts($0.precision) && $0.pin.load(ordering: .relaxed) >= 0
        }
    }
}

extension Duration {
    /// The duration in whole nanoseconds (negative durations count as 0).
    var nanoseconds: UInt64 {
        let (s, atto) = components
        return UInt64(max(0, s)) * 1_000_000_000 + UInt64(max(0, atto) / 1_000_000_000)
    }
}
