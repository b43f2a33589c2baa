import Synchronization
import WStoreCore

/// A resident expert, pinned: while a handle exists its expert is never evicted and its
/// bytes stay valid. Release it (``release()``, or let it go out of scope) as soon as
/// the layer is computed, so the budget can be reused.
///
/// What keeps the memory alive: the bytes are a buffer the manager owns (decoded, or
/// copied out of the memory map for raw records), not pages of a read transaction, so a
/// handle never holds an LMDB snapshot open and never blocks a writer growing the map.
/// The handle holds a reference to the expert's slot, which owns the buffer; eviction
/// frees it only after atomically checking that no handle pins it.
///
/// `~Copyable`: one handle is one pin. Acquiring a resident expert allocates nothing.
public struct ExpertHandle: ~Copyable, Sendable {
    let slot: ExpertSlot

    init(_ slot: ExpertSlot) { self.slot = slot }

    deinit { slot.unpin() }

    /// Releases the pin now (the same as letting the handle go out of scope).
    public consuming func release() {}

    /// The expert's layer.
    public var layer: Int { slot.layer }
    /// The expert's index within its layer.
    public var expert: Int { slot.expert }
    /// The expert's part names (e.g. `down`, `gate`, `up`), sorted.
    public var parts: [String] { slot.layout.parts.map(\.name) }

    /// All parts, one after another (each starts 64-byte aligned; see ``bytes(part:)``).
    /// - Warning: valid only while this handle is alive.
    public var bytes: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: slot.buffer, count: slot.layout.totalBytes)
    }

    /// The bytes of part `part` (e.g. `up`), decoded; `nil` when the expert has no such part.
    /// - Warning: valid only while this handle is alive.
    public func bytes(part: String) -> UnsafeRawBufferPointer? {
        guard let p = slot.layout.parts.first(where: { $0.name == part }), let base = slot.buffer else { return nil }
        return UnsafeRawBufferPointer(start: base + p.offset, count: p.size)
    }

    /// Lends the bytes of part `part` to `body`.
    /// - Throws: ``WStoreError/notFound(_:)`` when the expert has no such part, or what `body` throws.
    public func withBytes<R>(part: String, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        guard let b = bytes(part: part) else { throw WStoreError.notFound("part \(part) of expert \(expert) of layer \(layer)") }
        return try body(b)
    }
}

/// Where an expert's parts sit in its resident buffer.
struct ExpertLayout: Sendable {
    struct Part: Sendable {
        var name: String
        var tensor: String
        var offset: Int
        var size: Int
    }
    var parts: [Part]
    var totalBytes: Int
}

/// One expert's residency state. The pin word is the lock-free heart of the hit path:
/// `-1` means not resident (absent, loading or being evicted), `n ≥ 0` means resident
/// with `n` handles. A hit pins with a compare-and-swap from `n` to `n + 1`; eviction
/// (under the manager's lock) swaps `0` for `-1` and only then frees the buffer.
///
/// `@unchecked Sendable`: `buffer` is written only while the pin word is `-1`, under the
/// manager's lock or by the one loader that reserved the slot, and published by the
/// releasing store that makes the pin word non-negative; it is read only by holders of
/// a pin (acquiring) or under the lock.
final class ExpertSlot: @unchecked Sendable {
    let id: Int
    let layer: Int
    let expert: Int
    let layout: ExpertLayout
    let pin = Atomic<Int>(-1)
    let hits = Atomic<Int>(0)
    let prefetchHits = Atomic<Int>(0)
    let deferredHits = Atomic<Int>(0)
    let prefetchedUnused = Atomic<Bool>(false)
    var buffer: UnsafeMutableRawPointer?

    init(id: Int, layer: Int, expert: Int, layout: ExpertLayout) {
        self.id = id
        self.layer = layer
        self.expert = expert
        self.layout = layout
    }

    deinit { if let buffer { PageMemory.deallocate(buffer, bytes: layout.totalBytes) } }

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

    @inline(__always) func unpin() {
        let before = pin.subtract(1, ordering: .releasing).oldValue
        precondition(before > 0, "released an expert handle that held no pin")
    }
}
