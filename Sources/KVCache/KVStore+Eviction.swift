import WStoreCore

/// The chunk index (kv.nodes), the leaf LRU (kv.leaves) and eviction.
extension KVStore {
    /// A chunk's index entry (format-spec/KV.md §2).
    package struct Node {
        var parent: UInt64
        var lastUse: UInt64
        var storedBytes: Int
        var rawBytes: Int
        var children: Int
        var depth: Int
        var model: String

        static let fixedSize = 44
        /// The largest stored or raw size an index entry may claim (2^48 bytes: 256 TiB), so
        /// that sums over the index cannot overflow either.
        static let maxSize: UInt64 = 1 << 48

        /// Bytes 40..<44 of a version-2 entry, "KVN2" (zero in version 1): the entry is
        /// sealed to its chunk key (KV.md §5).
        static let sealedMarker: UInt32 = 0x324E_564B

        /// Parses the entry stored under chunk `key`, checking its seal (version 2).
        package static func parse(_ stored: UnsafeRawBufferPointer, key: UInt64) throws -> Node {
            let what = "KV index entry \(hex(key))"
            guard stored.count >= fixedSize else {
                throw WStoreError.corruptRecord(name: what, reason: "\(stored.count) bytes")
            }
            var b = stored
            switch UInt32(littleEndian: stored.loadUnaligned(fromByteOffset: 40, as: UInt32.self)) {
            case sealedMarker:
                guard let inner = Sealed.open(stored, key: PrefixKey.bytes(key)), inner.count >= fixedSize else {
                    throw WStoreError.corruptRecord(
                        name: what, reason: "seal mismatch (damaged, or not the entry of this key)")
                }
                b = inner
            case 0: break  // version 1: unsealed
            default: throw WStoreError.corruptRecord(name: what, reason: "unknown entry version")
            }
            func u64(_ o: Int) -> UInt64 { UInt64(littleEndian: b.loadUnaligned(fromByteOffset: o, as: UInt64.self)) }
            func u32(_ o: Int) -> Int { Int(UInt32(littleEndian: b.loadUnaligned(fromByteOffset: o, as: UInt32.self))) }
            guard u64(16) <= maxSize, u64(24) <= maxSize else {
                throw WStoreError.corruptRecord(name: what, reason: "byte counts out of range")
            }
            guard let model = String(validating: UnsafeRawBufferPointer(rebasing: b[fixedSize...]), as: UTF8.self)
            else {
                throw WStoreError.corruptRecord(name: what, reason: "model name is not UTF-8")
            }
            return Node(
                parent: u64(0), lastUse: u64(8), storedBytes: Int(u64(16)), rawBytes: Int(u64(24)),
                children: u32(32), depth: u32(36), model: model)
        }

        static func read(_ txn: borrowing WriteTransaction, _ db: LMDBDatabase, _ key: UInt64) throws -> Node? {
            guard let v = try txn.get(db, PrefixKey.bytes(key)) else { return nil }
            return try parse(v, key: key)
        }

        /// The entry to store under chunk `key`, sealed to it.
        func bytes(key: UInt64) -> [UInt8] {
            var b = [UInt8](repeating: 0, count: Node.fixedSize)
            b.withUnsafeMutableBytes { p in
                p.storeBytes(of: parent.littleEndian, toByteOffset: 0, as: UInt64.self)
                p.storeBytes(of: lastUse.littleEndian, toByteOffset: 8, as: UInt64.self)
                p.storeBytes(of: UInt64(storedBytes).littleEndian, toByteOffset: 16, as: UInt64.self)
                p.storeBytes(of: UInt64(rawBytes).littleEndian, toByteOffset: 24, as: UInt64.self)
                p.storeBytes(of: UInt32(children).littleEndian, toByteOffset: 32, as: UInt32.self)
                p.storeBytes(of: UInt32(depth).littleEndian, toByteOffset: 36, as: UInt32.self)
                p.storeBytes(of: Node.sealedMarker.littleEndian, toByteOffset: 40, as: UInt32.self)
            }
            return Sealed.seal(b + Array(model.utf8), key: PrefixKey.bytes(key))
        }
    }

    /// Store-wide counters, kept in kv.meta under "counters".
    struct Counters {
        var clock: UInt64 = 0
        var storedBytes: Int = 0
        var chunks: Int = 0

        static func read(_ txn: borrowing WriteTransaction, _ db: LMDBDatabase) throws -> Counters {
            guard let b = try txn.get(db, Array("counters".utf8)), b.count == 24,
                UInt64(littleEndian: b.loadUnaligned(fromByteOffset: 8, as: UInt64.self)) <= UInt64(Int.max / 2),
                UInt64(littleEndian: b.loadUnaligned(fromByteOffset: 16, as: UInt64.self)) <= UInt64(Int.max / 2)
            else {
                throw WStoreError.corruptRecord(name: "KV counters", reason: "missing or damaged")
            }
            return Counters(
                clock: UInt64(littleEndian: b.loadUnaligned(fromByteOffset: 0, as: UInt64.self)),
                storedBytes: Int(UInt64(littleEndian: b.loadUnaligned(fromByteOffset: 8, as: UInt64.self))),
                chunks: Int(UInt64(littleEndian: b.loadUnaligned(fromByteOffset: 16, as: UInt64.self))))
        }

        func write(_ txn: borrowing WriteTransaction, _ db: LMDBDatabase) throws {
            var b = [UInt8](repeating: 0, count: 24)
            b.withUnsafeMutableBytes { p in
                p.storeBytes(of: clock.littleEndian, toByteOffset: 0, as: UInt64.self)
                p.storeBytes(of: UInt64(storedBytes).littleEndian, toByteOffset: 8, as: UInt64.self)
                p.storeBytes(of: UInt64(chunks).littleEndian, toByteOffset: 16, as: UInt64.self)
            }
            try b.withUnsafeBytes { try txn.put(db, Array("counters".utf8), $0) }
        }
    }

    /// The kv.leaves key: last use then chunk key, both big-endian, so the first entry is the LRU leaf.
    static func leafKey(_ lastUse: UInt64, _ key: UInt64) -> [UInt8] {
        PrefixKey.bytes(lastUse) + PrefixKey.bytes(key)
    }

    func putNode(_ txn: borrowing WriteTransaction, _ key: UInt64, _ node: Node) throws {
        try node.bytes(key: key).withUnsafeBytes { try txn.put(nodes, PrefixKey.bytes(key), $0) }
    }

    /// Marks a chunk used at `clock`.
    func touch(_ txn: borrowing WriteTransaction, key: UInt64, node: inout Node, clock: UInt64) throws {
        if node.children == 0 {
            try txn.delete(leaves, KVStore.leafKey(node.lastUse, key))
            try txn.put(leaves, KVStore.leafKey(clock, key), UnsafeRawBufferPointer(start: nil, count: 0))
        }
        node.lastUse = clock
        try putNode(txn, key, node)
    }

    /// Adds a chunk under `parent` (0 for a first chunk).
    func insert(
        _ txn: borrowing WriteTransaction, key: UInt64, parent: UInt64, depth: Int, model: String,
        value: [UInt8], counters: inout Counters, rawBytes: Int
    ) throws {
        try value.withUnsafeBytes {
            try insert(
                txn, key: key, parent: parent, depth: depth, model: model, pieces: [$0], counters: &counters,
                rawBytes: rawBytes)
        }
    }

    /// Inserts a chunk given as pieces of its bytes in order (``KVChunk/Encoded/withPieces(_:)``),
    /// written in place with one vectored write, never copied together first.
    func insert(
        _ txn: borrowing WriteTransaction, key: UInt64, parent: UInt64, depth: Int, model: String,
        pieces: [UnsafeRawBufferPointer], counters: inout Counters, rawBytes: Int
    ) throws {
        let size = pieces.reduce(0) { $0 + $1.count }
        counters.clock += 1
        try env.put(txn, chunks, PrefixKey.bytes(key), pieces: pieces)
        try putNode(
            txn, key,
            Node(
                parent: parent, lastUse: counters.clock, storedBytes: size, rawBytes: rawBytes,
                children: 0, depth: depth, model: model))
        try txn.put(leaves, KVStore.leafKey(counters.clock, key), UnsafeRawBufferPointer(start: nil, count: 0))
        if parent != 0, var p = try Node.read(txn, nodes, parent) {
            if p.children == 0 { try txn.delete(leaves, KVStore.leafKey(p.lastUse, parent)) }
            p.children += 1
            try putNode(txn, parent, p)
        }
        counters.storedBytes += size
        counters.chunks += 1
    }

    /// Evicts least recently used leaves while the store is over its byte or chunk budget.
    /// Returns how many chunks went.
    func evictToBudget(_ txn: borrowing WriteTransaction, counters: inout Counters) throws -> Int {
        var evicted = 0
        func over() -> Bool {
            (options.budgetBytes > 0 && counters.storedBytes > options.budgetBytes)
                || (options.maxChunks > 0 && counters.chunks > options.maxChunks)
        }
        while over() {
            var victim: [UInt8]?
            try txn.scan(leaves, prefix: []) { k, _ in
                victim = Array(k)
                return false
            }
            guard let victim, victim.count == 16 else { break }
            let key = victim.withUnsafeBytes { UInt64(bigEndian: $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self)) }
            try txn.delete(leaves, victim)
            guard let node = try Node.read(txn, nodes, key) else { continue }
            try txn.delete(chunks, PrefixKey.bytes(key))
            try txn.delete(nodes, PrefixKey.bytes(key))
            counters.storedBytes -= node.storedBytes
            counters.chunks -= 1
            evicted += 1
            if node.parent != 0, var p = try Node.read(txn, nodes, node.parent) {
                p.children -= 1
                if p.children == 0 {
                    try txn.put(
                        leaves, KVStore.leafKey(p.lastUse, node.parent), UnsafeRawBufferPointer(start: nil, count: 0))
                }
                try putNode(txn, node.parent, p)
            }
        }
        return evicted
    }
}
