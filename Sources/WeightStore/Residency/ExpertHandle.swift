import Dispatch
import Synchronization
import WStoreCore

/// A resident expert, pinned: while a handle exists its expert is never evicted and its
/// bytes stay valid. Release it (``release()``, or let it go out of scope) as soon as
/// the layer is computed, so the budget can be reused.
///
/// What keeps the memory alive: the bytes are pages the manager owns (decoded, or copied
/// out of the memory map for raw records), not pages of a read transaction, so a handle
/// never holds an LMDB snapshot open and never blocks a writer growing the map. The
/// handle holds a reference to the expert's slot, which owns the pages; eviction unmaps
/// them only after atomically checking that no handle pins it. The pages are read-only
/// once loaded: a write through a lent pointer faults.
///
/// The bytes are lent, never returned: ``withBytes(part:_:)`` and ``withBytes(_:)`` hand
/// them to a closure, which is within the handle's lifetime by construction.
///
/// `~Copyable`: one handle is one pin. Acquiring a resident expert allocates nothing.
public struct ExpertHandle: ~Copyable, Sendable {
    let slot: ExpertSlot
    /// Whether the acquire found the expert resident (a hit) rather than loading it or
    /// waiting for a load (a miss).
    public let wasHit: Bool

    /// Wraps a pin already taken on `slot`; the handle gives it back.
    package init(pinned slot: ExpertSlot, hit: Bool) {
        self.slot = slot
        self.wasHit = hit
    }

    deinit { slot.unpin() }

    /// Releases the pin now (the same as letting the handle go out of scope).
    public consuming func release() {}

    /// The precision of the copy this handle holds: ``ExpertPrecision/exact``, or a
    /// low-bit variant whose parts are quantized blocks (see ``dequantize(part:into:as:)``).
    /// An upgrade to exact never changes it: a later acquire gets the exact copy.
    public var precision: ExpertPrecision { slot.precision }
    /// The expert's layer.
    public var layer: Int { slot.layer }
    /// The expert's index within its layer.
    public var expert: Int { slot.expert }
    /// The expert's part names (e.g. `down`, `gate`, `up`), sorted.
    public var parts: [String] { slot.layout.parts.map(\.name) }
    /// Where each part sits in the expert's buffer, with its dtype and shape.
    public var layout: ExpertLayout { slot.layout }

    /// Lends the bytes of part `part` (e.g. `up`), decoded, read-only, to `body`: the
    /// lossless values for an exact copy, the raw quantized blocks for a low-bit one.
    /// - Throws: ``WStoreError/notFound(_:)`` when the expert has no such part, or what `body` throws.
    /// - Warning: the bytes are valid only inside `body`; do not let the pointer escape.
    public func withBytes<R>(part: String, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        guard let p = slot.layout.parts.first(where: { $0.name == part }) else {
            throw WStoreError.notFound("part \(part) of expert \(expert) of layer \(layer)")
        }
        return try body(UnsafeRawBufferPointer(start: baseAddress + p.offset, count: p.size))
    }

    /// Lends all parts, one after another at their ``ExpertLayout/Part/offset``s (each
    /// 64-byte aligned), to `body`.
    /// - Warning: the bytes are valid only inside `body`; do not let the pointer escape.
    public func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(start: baseAddress, count: slot.layout.totalBytes))
    }

    /// The start of the expert's buffer, for the C ABI, which lends it with its own
    /// documented lifetime (until the C handle is released).
    /// - Warning: valid only while this handle is alive.
    package var baseAddress: UnsafeRawPointer { UnsafeRawPointer(slot.buffer!) }
}

/// Experts of one layer, pinned together by ``ResidencyManager/acquire(layer:experts:)``:
/// all of them or none. Releasing the set (or letting it go) unpins every one.
public struct ExpertSet: ~Copyable, Sendable {
    let slots: [ExpertSlot]
    let hits: [Bool]

    init(pinned slots: [ExpertSlot], hits: [Bool]) {
        self.slots = slots
        self.hits = hits
    }

    deinit { for s in slots { s.unpin() } }

    /// Unpins every expert of the set now.
    public consuming func release() {}

    /// How many experts the set holds.
    public var count: Int { slots.count }
    /// The experts, in the order they were asked for.
    public var experts: [Int] { slots.map(\.expert) }
    /// The precision of the copy of expert `i` the set holds.
    public func precision(_ i: Int) -> ExpertPrecision { slots[i].precision }
    /// Whether expert `i` of the set (an index into ``experts``) was resident when asked for.
    public func wasHit(_ i: Int) -> Bool { hits[i] }
    /// The layout of expert `i` of the set.
    public func layout(_ i: Int) -> ExpertLayout { slots[i].layout }

    /// Lends part `part` of expert `i` of the set (an index into ``experts``) to `body`.
    /// - Throws: ``WStoreError/notFound(_:)`` when that expert has no such part, or what `body` throws.
    /// - Warning: the bytes are valid only inside `body`.
    public func withBytes<R>(_ i: Int, part: String, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        let slot = slots[i]
        guard let p = slot.layout.parts.first(where: { $0.name == part }) else {
            throw WStoreError.notFound("part \(part) of expert \(slot.expert) of layer \(slot.layer)")
        }
        return try body(UnsafeRawBufferPointer(start: UnsafeRawPointer(slot.buffer!) + p.offset, count: p.size))
    }
}

/// Where an expert's parts sit in its resident buffer, and what each part is.
public struct ExpertLayout: Sendable, Equatable {
    /// One part (e.g. `up`): a tensor of the store.
    public struct Part: Sendable, Equatable {
        /// The part name, e.g. `up`.
        public var name: String
        /// The tensor it is read from.
        public var tensor: String
        /// Its offset in the expert's buffer (a multiple of 64).
        public var offset: Int
        /// Its bytes.
        public var size: Int
        /// Its element type.
        public var dtype: DType
        /// Its dimensions, outermost first (the logical elements, also for blocks).
        public var shape: [Int]
        /// The precision of its bytes: a low-bit copy of an expert holds each part as
        /// that precision's blocks where the part has such a variant, else exact.
        public var precision: ExpertPrecision = .exact
        /// Bytes of its record in the store (compressed or raw): what a load reads.
        public var storedSize = 0
        /// Its logical elements.
        public var elements: Int { shape.reduce(1, *) }
    }
    /// The parts, sorted by name.
    public var parts: [Part]
    /// Bytes of the whole buffer (every part, each rounded up to 64 bytes).
    public var totalBytes: Int
    /// Bytes of the parts' records in the store: what loading the expert reads.
    public var storedBytes: Int { parts.reduce(0) { $0 + $1.storedSize } }
}

/// Wakes threads and tasks waiting for room in a residency budget. A release that drops
/// an expert's last pin, or a load that fails, calls ``wakeAll()``; a waiter registers
/// (under the manager's lock) before it re-checks for room and then sleeps, so no wake-up
/// between the check and the sleep is lost.
final class RoomSignal: Sendable {
    /// Waiters registered now; read lock-free by releases.
    let waiting = Atomic<Int>(0)
    private let sleepers = Mutex<[RoomSleeper]>([])

    /// Registers a sleeper, to be woken by the next ``wakeAll()``.
    func register() -> RoomSleeper {
        let s = RoomSleeper()
        sleepers.withLock { $0.append(s) }
        waiting.add(1, ordering: .sequentiallyConsistent)
        return s
    }

    /// Forgets `s` if no wake-up took it yet (a waiter that found room or timed out).
    func deregister(_ s: RoomSleeper) {
        let removed = sleepers.withLock { list -> Bool in
            guard let i = list.firstIndex(where: { $0 === s }) else { return false }
            list.remove(at: i)
            return true
        }
        if removed { waiting.subtract(1, ordering: .sequentiallyConsistent) }
    }

    /// Wakes every registered sleeper.
    func wakeAll() {
        let all = sleepers.withLock { list -> [RoomSleeper] in
            defer { list = [] }
            return list
        }
        guard !all.isEmpty else { return }
        waiting.subtract(all.count, ordering: .sequentiallyConsistent)
        for s in all { s.fire() }
    }
}

/// One wait for room: a semaphore for a blocked thread, a continuation for a task.
final class RoomSleeper: Sendable {
    private struct State {
        var fired = false
        var continuation: CheckedContinuation<Void, Never>?
    }
    private let state = Mutex(State())
    private let semaphore = DispatchSemaphore(value: 0)

    func fire() {
        let c = state.withLock { s -> CheckedContinuation<Void, Never>? in
            guard !s.fired else { return nil }
            s.fired = true
            defer { s.continuation = nil }
            return s.continuation
        }
        semaphore.signal()
        c?.resume()
    }

    /// Blocks until fired or until `deadline` (uptime nanoseconds); returns whether fired.
    func wait(until deadline: UInt64) -> Bool {
        semaphore.wait(timeout: DispatchTime(uptimeNanoseconds: deadline)) == .success
    }

    /// Suspends until fired or until `deadline` (uptime nanoseconds).
    func value(until deadline: UInt64) async {
        let timer = Task { [self] in
            let now = DispatchTime.now().uptimeNanoseconds
            if deadline > now { try? await Task.sleep(nanoseconds: deadline - now) }
            self.fire()
        }
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if s.fired { return true }
                s.continuation = c
                return false
            }
            if now { c.resume() }
        }
        timer.cancel()
    }
}

/// One copy of an expert (exact, or a low-bit variant) and its residency state. The pin word is the lock-free heart of the hit path:
/// `-1` means not resident (absent, loading or being evicted), `n ≥ 0` means resident
/// with `n` handles. A hit pins with a compare-and-swap from `n` to `n + 1`; eviction
/// (under the manager's lock) swaps `0` for `-1` and only then unmaps the buffer.
///
/// `@unchecked Sendable`: `buffer` is written only while the pin word is `-1`, under the
/// manager's lock or by the one loader that reserved the slot, and published by the
/// releasing store that makes the pin word non-negative; it is read only by holders of
/// a pin (acquiring) or under the lock.
package final class ExpertSlot: @unchecked Sendable {
    /// The expert's id (shared by all its copies).
    let id: Int
    /// This copy's index in the manager's ``ResidencyManager/allSlots``.
    let key: Int
    /// This copy's precision.
    package let precision: ExpertPrecision
    /// The expert's layer.
    package let layer: Int
    /// The expert's index in its layer.
    package let expert: Int
    /// Where its parts sit in its buffer.
    package let layout: ExpertLayout
    let room: RoomSignal
    let pin = Atomic<Int>(-1)
    let hits = Atomic<Int>(0)
    let prefetchHits = Atomic<Int>(0)
    let deferredHits = Atomic<Int>(0)
    let prefetchedUnused = Atomic<Bool>(false)
    /// Whether the copy is resident or loading (its bytes count against the budget);
    /// read and written under the manager's lock only.
    var held = false
    /// The resident buffer; read it only while holding a pin.
    package var buffer: UnsafeMutableRawPointer?

    init(id: Int, key: Int, precision: ExpertPrecision, layer: Int, expert: Int, layout: ExpertLayout, room: RoomSignal) {
        self.id = id
        self.key = key
        self.precision = precision
        self.layer = layer
        self.expert = expert
        self.layout = layout
        self.room = room
    }

    deinit { freeBuffer() }

    /// Unmaps the buffer, if any (under the manager's lock, or when the slot goes).
    func freeBuffer() {
        if let b = buffer { ReadOnlyPages.free(b, max(64, layout.totalBytes)) }
        buffer = nil
    }

    /// Pins the expert if it is resident; lock-free.
    @inline(__always) func pinIfResident() -> Bool {
        var v = pin.load(ordering: .relaxed)
        while v >= 0 {
            let (done, seen) = pin.compareExchange(expected: v, desired: v + 1, ordering: .acquiring)
            if done { return true }
            v = seen
        }
        return false
    }

    /// Drops one pin; the last one wakes anyone waiting for room.
    @inline(__always) package func unpin() {
        let before = pin.subtract(1, ordering: .sequentiallyConsistent).oldValue
        precondition(before > 0, "released an expert handle that held no pin")
        if before == 1, room.waiting.load(ordering: .sequentiallyConsistent) > 0 { room.wakeAll() }
    }
}
