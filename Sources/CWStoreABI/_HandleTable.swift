import Synchronization

/// The kinds of handle the C ABI hands out; each has its own table, and its own tag in
/// the handle's bits, so a handle of one kind passed as another is refused.
enum HandleKind: UInt64 {
    case store = 1, residency = 2, expert = 3, kv = 4
}

/// Live handles of one kind. A handle is not a pointer to the object: it is the pointer
/// -sized integer `kind << 60 | generation << 32 | (slot + 1)`, looked up in a slot table
/// whose memory is never freed. A slot's word holds its generation and whether it is
/// live; closing or releasing a handle clears the live bit with a compare-and-swap, and
/// the next handle in that slot gets the next generation. So a handle used after its
/// close or release, released twice, or of the wrong kind, is found not to match and
/// refused with `WSTORE_E_INVALID_HANDLE`, and a freed object is never dereferenced.
///
/// Lookups are lock-free (two acquiring loads); so are inserting and removing, which pop
/// and push free slots on a Treiber stack whose head carries a tag against ABA (a mutex
/// is taken only to add a chunk of 1024 slots). A lookup racing the close of the same
/// handle is the caller's bug (the header says so); anything else may run on any thread.
///
/// `@unchecked Sendable`: the chunk directory's entries go once from 0 to a chunk, under
/// the mutex, published by a releasing store; a slot's object pointer is written only while
/// the slot is not live, before the releasing store that makes it live.
final class HandleTable<Object: AnyObject>: @unchecked Sendable {
    private static var chunkBits: Int { 10 }
    private static var chunkSize: Int { 1 << chunkBits }
    private static var maxChunks: Int { 1 << 14 }

    private let kind: HandleKind
    /// Per chunk: the address of its slot words (`Atomic<UInt64>` each), 0 until made.
    private let words: UnsafeMutablePointer<Atomic<UInt>>
    /// Per chunk: the address of its object pointers, 0 until made.
    private let objects: UnsafeMutablePointer<Atomic<UInt>>
    /// Per chunk: the address of its free-list links (`Atomic<UInt32>`, next slot + 1), 0 until made.
    private let links: UnsafeMutablePointer<Atomic<UInt>>
    /// The free list's head: tag << 32 | (slot + 1), 0 in the low half when empty.
    private let freeHead = Atomic<UInt64>(0)
    /// Slots never used yet start here.
    private let fresh = Atomic<Int>(0)
    private let growing = Mutex(())

    init(_ kind: HandleKind) {
        self.kind = kind
        words = .allocate(capacity: Self.maxChunks)
        objects = .allocate(capacity: Self.maxChunks)
        links = .allocate(capacity: Self.maxChunks)
        for i in 0 ..< Self.maxChunks {
            (words + i).initialize(to: Atomic(0))
            (objects + i).initialize(to: Atomic(0))
            (links + i).initialize(to: Atomic(0))
        }
    }
    // Never deinitialized: the tables are process-wide and live as long as the process.

    private func slotWord(_ index: Int) -> UnsafeMutablePointer<Atomic<UInt64>>? {
        let chunk = words[index >> Self.chunkBits].load(ordering: .acquiring)
        guard chunk != 0 else { return nil }
        return UnsafeMutablePointer<Atomic<UInt64>>(bitPattern: chunk)! + (index & (Self.chunkSize - 1))
    }

    private func slotObject(_ index: Int) -> UnsafeMutablePointer<UnsafeMutableRawPointer?> {
        let chunk = objects[index >> Self.chunkBits].load(ordering: .acquiring)
        return UnsafeMutablePointer<UnsafeMutableRawPointer?>(bitPattern: chunk)! + (index & (Self.chunkSize - 1))
    }

    private func slotLink(_ index: Int) -> UnsafeMutablePointer<Atomic<UInt32>> {
        let chunk = links[index >> Self.chunkBits].load(ordering: .acquiring)
        return UnsafeMutablePointer<Atomic<UInt32>>(bitPattern: chunk)! + (index & (Self.chunkSize - 1))
    }

    /// Makes the chunk holding slot `index` if no thread has yet.
    private func ensureChunk(_ index: Int) {
        let c = index >> Self.chunkBits
        guard words[c].load(ordering: .acquiring) == 0 else { return }
        growing.withLock { _ in
            guard words[c].load(ordering: .acquiring) == 0 else { return }
            let o = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: Self.chunkSize)
            o.initialize(repeating: nil, count: Self.chunkSize)
            let l = UnsafeMutablePointer<Atomic<UInt32>>.allocate(capacity: Self.chunkSize)
            let w = UnsafeMutablePointer<Atomic<UInt64>>.allocate(capacity: Self.chunkSize)
            for j in 0 ..< Self.chunkSize {
                (l + j).initialize(to: Atomic(0))
                (w + j).initialize(to: Atomic(0))
            }
            objects[c].store(UInt(bitPattern: o), ordering: .releasing)
            links[c].store(UInt(bitPattern: l), ordering: .releasing)
            words[c].store(UInt(bitPattern: w), ordering: .releasing)
        }
    }

    /// A free slot: popped from the free list, else a fresh one.
    private func takeSlot() throws -> Int {
        var head = freeHead.load(ordering: .acquiring)
        while head & 0xFFFF_FFFF != 0 {
            let index = Int(head & 0xFFFF_FFFF) - 1
            let next = UInt64(slotLink(index).pointee.load(ordering: .relaxed))
            let (done, seen) = freeHead.compareExchange(
                expected: head, desired: (head >> 32 &+ 1) << 32 | next,
                ordering: .acquiring)
            if done { return index }
            head = seen
        }
        let i = fresh.add(1, ordering: .relaxed).oldValue
        guard i < Self.maxChunks * Self.chunkSize else {
            throw ABIError.invalidArgument("too many open handles (\(i)): release some")
        }
        ensureChunk(i)
        return i
    }

    /// Puts slot `index` on the free list.
    private func giveSlot(_ index: Int) {
        var head = freeHead.load(ordering: .relaxed)
        while true {
            slotLink(index).pointee.store(UInt32(truncatingIfNeeded: head & 0xFFFF_FFFF), ordering: .relaxed)
            let (done, seen) = freeHead.compareExchange(
                expected: head, desired: (head >> 32 &+ 1) << 32 | UInt64(index + 1),
                ordering: .releasing)
            if done { return }
            head = seen
        }
    }

    /// Stores `object` (retained) in a free slot and returns its handle.
    /// - Throws: ``ABIError/invalidArgument(_:)`` when 16 million handles of this kind are live.
    func insert(_ object: Object) throws -> OpaquePointer {
        let index = try takeSlot()
        let word = slotWord(index)!
        let generation = ((word.pointee.load(ordering: .relaxed) >> 1) + 1) & 0x0FFF_FFFF
        let g = generation == 0 ? 1 : generation
        slotObject(index).pointee = Unmanaged.passRetained(object).toOpaque()
        word.pointee.store(g << 1 | 1, ordering: .releasing)
        let bits = kind.rawValue << 60 | g << 32 | UInt64(index + 1)
        return OpaquePointer(bitPattern: UInt(bits))!
    }

    /// The slot index and the live word a handle must match, or nil when its bits are not
    /// a handle of this kind.
    @inline(__always) private func decode(_ handle: OpaquePointer) -> (index: Int, live: UInt64)? {
        let bits = UInt64(UInt(bitPattern: handle))
        guard bits >> 60 == kind.rawValue else { return nil }
        let slot = bits & 0xFFFF_FFFF
        guard slot > 0, slot <= UInt64(Self.maxChunks * Self.chunkSize) else { return nil }
        return (Int(slot - 1), (bits >> 32 & 0x0FFF_FFFF) << 1 | 1)
    }

    /// The object behind a live handle, or nil when the handle is not live (closed,
    /// released, of another kind, or never issued).
    @inline(__always) func lookup(_ handle: OpaquePointer) -> Object? {
        guard let (index, live) = decode(handle), let word = slotWord(index),
            word.pointee.load(ordering: .acquiring) == live,
            let p = slotObject(index).pointee
        else { return nil }
        return Unmanaged<Object>.fromOpaque(p).takeUnretainedValue()
    }

    /// Runs `body` on the object behind a live handle without retaining it (the table holds
    /// it, and a close racing this call is the caller's bug), or returns nil when the handle
    /// is not live.
    @inline(__always) func withLive<R>(_ handle: OpaquePointer, _ body: (Object) throws -> R) rethrows -> R? {
        guard let (index, live) = decode(handle), let word = slotWord(index),
            word.pointee.load(ordering: .acquiring) == live,
            let p = slotObject(index).pointee
        else { return nil }
        return try Unmanaged<Object>.fromOpaque(p)._withUnsafeGuaranteedRef(body)
    }

    /// Ends a live handle and returns its object (the table's reference, now the
    /// caller's); nil when the handle is not live. Exactly one of two racing removes wins.
    func remove(_ handle: OpaquePointer) -> Object? {
        guard let (index, live) = decode(handle), let word = slotWord(index) else { return nil }
        guard
            word.pointee.compareExchange(expected: live, desired: live & ~1, ordering: .acquiringAndReleasing).exchanged
        else {
            return nil
        }
        let slot = slotObject(index)
        let p = slot.pointee!
        slot.pointee = nil
        giveSlot(index)
        return Unmanaged<Object>.fromOpaque(p).takeRetainedValue()
    }
}
