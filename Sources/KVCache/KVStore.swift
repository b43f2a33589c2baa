import Foundation
import Synchronization
import WStoreCore

/// A prefix-keyed, compressed KV cache store: its own LMDB environment (a directory).
///
/// Token ids are cut into chunks of ``Options/chunkTokens``; each whole chunk is stored
/// under its chained prefix key (``PrefixKey``). ``store(tokens:model:salt:kv:)`` writes the
/// chunks that are missing; ``lookup(tokens:model:salt:)`` finds the longest cached prefix
/// in whole chunks and returns it, decoded and checked. A byte budget (and optionally a
/// chunk count) bounds the store: the least recently used chunk that no other chunk
/// extends (a leaf) is evicted first, so a cached chunk's parent is always cached too.
/// format-spec/KV.md describes the layout.
///
/// Safe to share across threads: LMDB serializes writers and lets readers run in parallel.
/// A lookup runs on a read transaction only: the last uses it sees are kept in memory by
/// this handle and written by its next store (or ``flushUseStamps()``).
public final class KVStore: Sendable {
    /// A store's fixed settings, chosen at ``create(at:options:)``.
    public struct Options: Sendable, Equatable {
        /// Tokens per chunk.
        public var chunkTokens: Int = 256
        /// Most stored bytes (chunk values) the store keeps; `0` for no limit.
        public var budgetBytes: Int = 0
        /// Most chunks the store keeps; `0` for no limit.
        public var maxChunks: Int = 0
        /// How chunks are compressed.
        public var codec: KVCodec = .lossless
        /// Quantization knobs for the int codecs.
        public var kivi = KIVIOptions()
        /// Threads that encode and decode the tensors of one chunk.
        public var threads: Int = 1
        /// The defaults: 256-token chunks, lossless, no budget.
        public init() {}
    }

    /// What ``store(tokens:model:salt:kv:)`` did.
    public struct StoreResult: Sendable, Equatable {
        /// Chunks written.
        public var written: Int
        /// Chunks that were already there.
        public var present: Int
        /// Chunks evicted to stay within the budget.
        public var evicted: Int
        /// Stored bytes written.
        public var storedBytes: Int
        /// Raw KV bytes of the chunks written.
        public var rawBytes: Int
    }

    /// What ``lookup(tokens:model:salt:)`` found.
    public struct Lookup: Sendable {
        /// Leading tokens found, a multiple of the chunk size.
        public var tokens: Int
        /// Their keys and values; `nil` when nothing was found.
        public var kv: KVCacheData?
        /// Chunks found.
        public var chunks: Int
        /// Of those, chunks that came from the remote tier (after the local ones).
        public var remoteChunks = 0
        /// Why the prefix ended early: the damage of the chunk after the last one
        /// delivered (a checksum or format error naming the chunk); `nil` when none.
        public var damage: WStoreError?
    }

    /// Totals, from ``stats()``.
    public struct Stats: Sendable, Equatable, Codable {
        /// Chunks held.
        public var chunks: Int
        /// Chunks that no other chunk extends.
        public var leaves: Int
        /// Stored bytes of all chunks.
        public var storedBytes: Int
        /// Raw KV bytes of all chunks.
        public var rawBytes: Int
        /// Chunks per model.
        public var chunksByModel: [String: Int]
    }

    /// The store's directory.
    public let path: String
    /// The settings it was created with (threads from the opener).
    public let options: Options
    /// Whether this handle refuses writes (the environment may be shared with a writer).
    public let readOnly: Bool
    let env: LMDBEnvironment
    let meta: LMDBDatabase, chunks: LMDBDatabase, nodes: LMDBDatabase, leaves: LMDBDatabase
    /// The shared remote tier, when the store was opened with one (KVStore+Remote.swift).
    let remote: RemoteTierHandle?
    /// Last uses seen by lookups, not yet written (the next ``store(tokens:model:salt:kv:)``
    /// or ``flushUseStamps()`` writes them), and this handle's lookup counters.
    let uses = Mutex(PendingUses())
    /// This handle's share of the store's deferred-commits marker while it defers commits
    /// (KVStore+Durability.swift); `nil` while its writes are synced.
    let deferral = Mutex<DeferredCommits?>(nil)
    /// Whether the open found the store torn by a system crash during deferred commits and
    /// emptied it (format-spec/KV.md §9).
    public let emptiedAtOpen: Bool

    /// The newest KV store format this build reads: 2 bound chunks to their keys, 3 added
    /// the raw codec. A store is written as version 3 only when its codec is raw, else 2,
    /// so a version-2 reader keeps reading every store it can decode; version-1 stores
    /// (chunks not bound to their keys) are still read.
    static let formatVersion = 3

    private init(
        path: String, env: LMDBEnvironment, options: Options, readOnly: Bool,
        remote: RemoteTierOptions?, emptiedAtOpen: Bool = false
    ) throws {
        self.path = path
        self.emptiedAtOpen = emptiedAtOpen
        self.remote = remote.map(RemoteTierHandle.init)
        self.env = env
        self.readOnly = readOnly
        self.options = options
        meta = try env.database("kv.meta", create: !env.readOnly)
        chunks = try env.database("kv.chunks", create: !env.readOnly)
        nodes = try env.database("kv.nodes", create: !env.readOnly)
        leaves = try env.database("kv.leaves", create: !env.readOnly)
    }

    /// Creates a new store in directory `path` (made if missing; it must not hold a store);
    /// `remote` adds a shared remote tier and `durability` chooses how this handle's writes
    /// reach the disk (neither is a setting of the store: give them at each open).
    /// - Throws: ``WStoreError/invalidArgument(_:)`` for bad options or an existing store,
    ///   ``WStoreError/io(call:path:errno:)`` when the directory cannot be made, ``LMDBError``.
    public static func create(
        at path: String, options: Options = Options(), remote: RemoteTierOptions? = nil,
        durability: Durability = .synced
    ) throws -> KVStore {
        guard options.chunkTokens > 0, options.budgetBytes >= 0, options.maxChunks >= 0, options.kivi.group > 0,
            options.kivi.residual >= 0
        else {
            throw WStoreError.invalidArgument(
                "chunk tokens and quantization group must be positive, budgets not negative")
        }
        if FileManager.default.fileExists(atPath: path + "/data.mdb") {
            throw WStoreError.invalidArgument("\(path) already holds a store; open it instead")
        }
        try Posix.makeDirectories(path)
        let env = try LMDBEnvironment.shared(path: path, readOnly: false, options: envOptions)
        let store = try KVStore(path: path, env: env, options: options, readOnly: false, remote: remote)
        let json = Sealed.sealJSON(
            try KVSettings(options, version: options.codec == .raw ? 3 : 2).encoded(), key: Array("settings".utf8))
        try env.write { txn in
            try json.withUnsafeBytes { try txn.put(store.meta, Array("settings".utf8), $0) }
            try Counters().write(txn, store.meta)
        }
        // A marker of a store that was in this directory before covers nothing now.
        try DeferredCommits.removeLeftover(directory: path)
        try store.setDurability(durability)
        return store
    }

    /// Opens an existing store; `readOnly` for inspection; `remote` adds a shared remote tier;
    /// `durability` chooses how this handle's writes reach the disk.
    /// An unreachable remote tier is not an error: the store works from its local tier, warns
    /// once, counts it, and retries with backoff.
    ///
    /// A store that had deferred commits when the system stopped (KV.md §9) may be torn: a
    /// writable open empties it (``emptiedAtOpen``, and a warning on stderr), a read-only
    /// open refuses it.
    /// - Throws: ``WStoreError/notAStore(path:reason:)`` when `path` is not a KV store,
    ///   ``WStoreError/newerFormat(what:found:supported:)`` for a newer one,
    ///   ``WStoreError/damagedFile(path:reason:)`` for a torn one opened read-only.
    public static func open(
        at path: String, readOnly: Bool = false, threads: Int = 1,
        remote: RemoteTierOptions? = nil, durability: Durability = .synced
    ) throws -> KVStore {
        try LMDBFile.checkReadable(directory: path)
        var emptied = false
        if case .otherBoot = try DeferredCommits.state(directory: path) {
            guard !readOnly else {
                throw WStoreError.damagedFile(
                    path: path + "/data.mdb",
                    reason:
                        "it had deferred commits when the system stopped, so its pages may be torn; a writable open empties it"
                )
            }
            emptied = try DeferredCommits.empty(directory: path)
            if emptied {
                FileHandle.standardError.write(
                    Data(
                        "wstore: KV store \(path) had deferred commits when the system stopped; it was emptied (format-spec/KV.md §9)\n"
                            .utf8))
            }
        }
        guard FileManager.default.fileExists(atPath: path + "/data.mdb") else {
            throw WStoreError.notAStore(path: path, reason: "no data.mdb in it")
        }
        let env = try LMDBEnvironment.shared(path: path, readOnly: readOnly, options: envOptions)
        let metaDB: LMDBDatabase
        do { metaDB = try env.database("kv.meta") } catch {
            throw WStoreError.notAStore(path: path, reason: "it is not a KV store (no kv.meta)")
        }
        // Version 2 settings are sealed to their key (KV.md §2); version 1 settings are the JSON alone.
        let found: (raw: [UInt8], sealed: Bool)? = try env.withRead { txn in
            try txn.get(metaDB, Array("settings".utf8)).map { v in
                Sealed.openJSON(v, key: Array("settings".utf8)).map { ($0, true) } ?? (Array(v), false)
            }
        }
        guard let (raw, sealed) = found, let s = KVSettings.decode(raw) else {
            throw WStoreError.notAStore(path: path, reason: "its KV settings are missing or unreadable")
        }
        let version = s.format_version
        guard version <= formatVersion else {
            throw WStoreError.newerFormat(what: "KV store \(path)", found: version, supported: formatVersion)
        }
        guard version >= 1, sealed || version == 1 else {
            throw WStoreError.corruptRecord(name: "KV settings of \(path)", reason: "seal mismatch")
        }
        guard var o = Options(settings: s) else {
            throw WStoreError.notAStore(path: path, reason: "its KV settings are incomplete")
        }
        o.threads = max(1, threads)
        let store = try KVStore(
            path: path, env: env, options: o, readOnly: readOnly, remote: remote, emptiedAtOpen: emptied)
        if !readOnly {
            try DeferredCommits.settleAbandoned(directory: path, env: env)
            try store.setDurability(durability)
        }
        return store
    }

    /// How every process opens a KV store's environment. Writers write through the map
    /// (`MDB_WRITEMAP`): a chunk is copied once, into the file's pages, and a commit
    /// writes nothing more than it syncs. lmdb.h: "Do not mix processes with and without
    /// MDB_WRITEMAP on the same environment", so every read-write open sets it (a
    /// read-only open writes nothing). Each commit still syncs (msync of the map);
    /// the data file is as long as the map, the unwritten part a hole.
    static var envOptions: LMDBEnvironment.Options {
        var o = LMDBEnvironment.Options()
        o.initialMapSize = 64 << 20
        o.writeMap = true
        return o
    }

    // MARK: store and lookup

    /// Room in the map for the chunks of one store, so its transaction does not run twice
    /// for want of it: a chunk's raw bytes and 1/64 more, plus 64 KiB, each.
    static func roomFor(chunks: Int, rawBytes: Int) -> Int { chunks * (rawBytes + rawBytes / 64 + (64 << 10)) }

    /// Stores the whole chunks of `tokens` that are missing, and marks the present ones used.
    ///
    /// `kv` holds the keys and values of `tokens` (the same token count); a trailing partial
    /// chunk is not stored. Then evicts least recently used leaves until the budget holds.
    /// - Throws: ``WStoreError/invalidArgument(_:)`` when `kv` and `tokens` disagree, ``LMDBError``.
    @discardableResult
    public func store(tokens: [UInt32], model: String, salt: String = "", kv: KVCacheData) throws -> StoreResult {
        guard kv.tokens == tokens.count else {
            throw WStoreError.invalidArgument("KV cache holds \(kv.tokens) tokens for \(tokens.count) token ids")
        }
        let ct = options.chunkTokens
        return try store(
            tokens: tokens, model: model, salt: salt, chunkBytes: kv.byteCount / max(1, kv.tokens) * ct
        ) { i in kv.slice(tokens: i * ct ..< (i + 1) * ct) }
    }

    /// ``store(tokens:model:salt:kv:)`` with chunk `i`'s keys and values made by `chunk(i)`
    /// (`chunkBytes` bytes each), called only for the chunks that are missing, on any thread.
    func store(
        tokens: [UInt32], model: String, salt: String, chunkBytes: Int,
        chunk: @escaping @Sendable (Int) throws -> KVCacheData
    ) throws -> StoreResult {
        guard !readOnly else { throw WStoreError.invalidArgument("\(path) is open read-only") }
        let keys = PrefixKey.chain(tokens: tokens, chunkTokens: options.chunkTokens, model: model, salt: salt)
        let pending = uses.withLock { $0.take() }
        let present: [Bool] = try env.withRead { txn in
            try keys.map { try txn.get(nodes, PrefixKey.bytes($0)) != nil }
        }
        // The missing chunks encode one ahead of the writes (ChunkPipeline): while chunk i
        // is written (and its pages start for the disk), the next missing one encodes on a
        // thread of its own; the writer, done with chunk i, encodes that chunk's tensors
        // nobody has taken yet instead of waiting for them. Written values are let go (and
        // encoded again should the transaction run twice) unless the remote tier is to be
        // sent them. Chunks under 1 MiB are not worth a thread: they encode when their turn comes.
        let missing = present.indices.filter { !present[$0] }
        let encoding = ChunkPipeline(missing: missing, startOnAThread: chunkBytes >= 1 << 20) { [options] i in
            ChunkEncoding(key: keys[i], codec: options.codec, kivi: options.kivi, threads: options.threads) {
                try chunk(i)
            }
        }
        encoding.start()
        let deferred = durability == .deferred
        let stored: StoreResult
        do {
            try env.ensureRoom(forAnother: Self.roomFor(chunks: missing.count, rawBytes: chunkBytes))
            stored = try write { txn in
                var counters = try Counters.read(txn, meta)
                try foldUses(txn, pending, counters: &counters)
                var result = StoreResult(written: 0, present: 0, evicted: 0, storedBytes: 0, rawBytes: 0)
                var parent: UInt64 = 0
                for (i, key) in keys.enumerated() {
                    if var node = try Node.read(txn, nodes, key) {
                        counters.clock += 1
                        try touch(txn, key: key, node: &node, clock: counters.clock)
                        result.present += 1
                    } else {
                        guard let value = try encoding.value(i) else {
                            // Evicted between the read and this write: encode it now.
                            let part = try chunk(i)
                            let v = try KVChunk.encode(part, key: key, codec: options.codec, kivi: options.kivi)
                            try insert(
                                txn, key: key, parent: parent, depth: i, model: model, value: v, counters: &counters,
                                rawBytes: part.byteCount)
                            result.written += 1
                            result.storedBytes += v.count
                            result.rawBytes += part.byteCount
                            result.evicted += try evictToBudget(txn, counters: &counters)
                            parent = key
                            continue
                        }
                        try value.withPieces {
                            try insert(
                                txn, key: key, parent: parent, depth: i, model: model, pieces: $0,
                                counters: &counters, rawBytes: chunkBytes)
                        }
                        result.written += 1
                        result.storedBytes += value.count
                        result.rawBytes += chunkBytes
                        result.evicted += try evictToBudget(txn, counters: &counters)
                        // The remote tier is sent the values after the commit; else they can go.
                        if remote == nil { encoding.release(i) }
                        // Its pages go to the disk while the next chunk encodes; the commit's
                        // sync then waits for less. A deferred commit waits for none.
                        if value.count >= 1 << 20 && !deferred { env.startWriteback() }
                    }
                    parent = key
                }
                try counters.write(txn, meta)
                return result
            }
        } catch {
            uses.withLock { $0.restore(pending) }
            throw error
        }
        if remote != nil {
            sendToRemote(keys: keys, encoded: encoding.encoded.mapValues { $0.bytes(threads: options.threads) })
        }
        return stored
    }

    /// The number of leading whole chunks of `tokens` cached, without loading or touching them.
    public func cachedChunks(tokens: [UInt32], model: String, salt: String = "") throws -> Int {
        let keys = PrefixKey.chain(tokens: tokens, chunkTokens: options.chunkTokens, model: model, salt: salt)
        return try env.withRead { txn in
            var n = 0
            for k in keys {
                guard try txn.get(nodes, PrefixKey.bytes(k)) != nil else { break }
                n += 1
            }
            return n
        }
    }

    /// Totals over the store.
    public func stats() throws -> Stats {
        try env.withRead { txn in
            var s = Stats(chunks: 0, leaves: 0, storedBytes: 0, rawBytes: 0, chunksByModel: [:])
            try txn.scan(nodes, prefix: []) { k, v in
                guard k.count == 8 else {
                    throw WStoreError.corruptRecord(name: "KV index", reason: "a key of \(k.count) bytes")
                }
                let n = try Node.parse(v, key: UInt64(bigEndian: k.loadUnaligned(as: UInt64.self)))
                s.chunks += 1
                if n.children == 0 { s.leaves += 1 }
                s.storedBytes += n.storedBytes
                s.rawBytes += n.rawBytes
                s.chunksByModel[n.model, default: 0] += 1
                return true
            }
            return s
        }
    }

    /// Checks the data file's B-tree pages, every chunk (header, key binding, every record's
    /// frame checksums), and the index against the chunks (KV.md §5): every chunk has an index
    /// entry of its length and every entry a chunk; parents are present one level up; children
    /// counts, the leaf list and the counters agree with the entries. Returns each problem with
    /// the chunk key it concerns (0 for the store as a whole).
    public func verify() throws -> [(key: UInt64, error: String)] {
        var bad: [(UInt64, String)] = []
        let pages = try env.checkPages()
        for p in pages.problems { bad.append((0, "\(path)/data.mdb: \(p)")) }
        if !pages.problems.isEmpty { return bad }
        return try env.withRead { txn in
            var lengths: [UInt64: Int] = [:], rawOf: [UInt64: Int] = [:]
            try txn.scan(chunks, prefix: []) { k, v in
                guard k.count == 8 else {
                    bad.append((0, "kv.chunks: key of \(k.count) bytes"))
                    return true
                }
                let key = UInt64(bigEndian: k.loadUnaligned(as: UInt64.self))
                lengths[key] = v.count
                do {
                    _ = try KVChunk.decode(v, key: key, name: "KV chunk \(hex(key))")
                    rawOf[key] = try KVChunk.info(v, key: key, name: "KV chunk \(hex(key))").rawBytes
                } catch { bad.append((key, "\(error)")) }
                return true
            }
            // A version-2 store (sealed settings) holds only sealed index entries.
            let sealedStore =
                try txn.get(meta, Array("settings".utf8))
                .map { Sealed.openJSON($0, key: Array("settings".utf8)) != nil } ?? false
            var nodeOf: [UInt64: Node] = [:]
            try txn.scan(nodes, prefix: []) { k, v in
                guard k.count == 8 else {
                    bad.append((0, "kv.nodes: key of \(k.count) bytes"))
                    return true
                }
                let key = UInt64(bigEndian: k.loadUnaligned(as: UInt64.self))
                if sealedStore
                    && (v.count < Node.fixedSize
                        || UInt32(littleEndian: v.loadUnaligned(fromByteOffset: 40, as: UInt32.self))
                            != Node.sealedMarker)
                {
                    bad.append((key, "KV index entry \(hex(key)) is not sealed in a version-2 store"))
                    return true
                }
                do { nodeOf[key] = try Node.parse(v, key: key) } catch { bad.append((key, "\(error)")) }
                return true
            }
            for (key, length) in lengths.sorted(by: { $0.key < $1.key }) {
                guard let n = nodeOf[key] else {
                    bad.append((key, "KV chunk \(hex(key)) has no index entry"))
                    continue
                }
                if let raw = rawOf[key], n.rawBytes != raw {
                    bad.append((key, "KV index entry \(hex(key)) says \(n.rawBytes) raw bytes, the chunk holds \(raw)"))
                }
                if n.storedBytes != length {
                    bad.append(
                        (key, "KV index entry \(hex(key)) says \(n.storedBytes) stored bytes, the chunk has \(length)"))
                }
            }
            var children: [UInt64: Int] = [:]
            for (key, n) in nodeOf.sorted(by: { $0.key < $1.key }) {
                if lengths[key] == nil { bad.append((key, "KV index entry \(hex(key)) has no chunk")) }
                if n.parent == 0 {
                    if n.depth != 0 {
                        bad.append((key, "KV index entry \(hex(key)): depth \(n.depth) without a parent"))
                    }
                } else if let p = nodeOf[n.parent] {
                    if p.depth + 1 != n.depth {
                        bad.append((key, "KV index entry \(hex(key)): depth \(n.depth) under a parent at \(p.depth)"))
                    }
                    children[n.parent, default: 0] += 1
                } else {
                    bad.append((key, "KV index entry \(hex(key)): parent \(hex(n.parent)) is not cached"))
                }
            }
            var expectedLeaves = Set<[UInt8]>()
            for (key, n) in nodeOf {
                if n.children != children[key, default: 0] {
                    bad.append(
                        (
                            key,
                            "KV index entry \(hex(key)) counts \(n.children) children, \(children[key, default: 0]) found"
                        ))
                }
                if n.children == 0 { expectedLeaves.insert(PrefixKey.bytes(n.lastUse) + PrefixKey.bytes(key)) }
            }
            var leafCount = 0
            try txn.scan(leaves, prefix: []) { k, _ in
                leafCount += 1
                if !expectedLeaves.contains(Array(k)) {
                    bad.append((0, "kv.leaves: an entry that is not a childless chunk at its last use"))
                }
                return true
            }
            if leafCount != expectedLeaves.count {
                bad.append((0, "kv.leaves holds \(leafCount) entries for \(expectedLeaves.count) childless chunks"))
            }
            if let c = try txn.get(meta, Array("counters".utf8)), c.count == 24 {
                let stored = UInt64(littleEndian: c.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
                let count = UInt64(littleEndian: c.loadUnaligned(fromByteOffset: 16, as: UInt64.self))
                let total = nodeOf.values.reduce(0) { $0 + $1.storedBytes }
                if count != UInt64(nodeOf.count) || stored != UInt64(total) {
                    bad.append(
                        (
                            0,
                            "KV counters say \(count) chunks, \(stored) bytes; the index holds \(nodeOf.count), \(total)"
                        ))
                }
            } else {
                bad.append((0, "KV counters missing or damaged"))
            }
            return bad
        }
    }
}

func hex(_ v: UInt64) -> String {
    let s = String(v, radix: 16)
    return String(repeating: "0", count: 16 - s.count) + s
}

extension KVStore {
    /// The stored bytes of one chunk, as they are (for tools and tests).
    package func rawChunk(_ key: UInt64) throws -> [UInt8]? {
        try env.withRead { txn in try txn.get(chunks, PrefixKey.bytes(key)).map { Array($0) } }
    }
}

extension KVStore {
    /// The settings record as stored (for tools and tests).
    package func settingsJSON() throws -> String {
        try env.withRead { txn in
            String(decoding: try txn.get(meta, Array("settings".utf8)).map { Array($0) } ?? [], as: UTF8.self)
        }
    }

    /// Lends the stored bytes of one chunk, in place in the map, to `body` (for benchmarks).
    /// lmdb.h: the value is valid until the read transaction ends, which is when `body` returns.
    package func withChunkValue<R>(_ key: UInt64, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R? {
        try env.withRead { txn in try txn.get(chunks, PrefixKey.bytes(key)).map(body) }
    }
}

extension KVStore.Options {
    /// The options a settings record holds (threads 1), or `nil` when it lacks the chunk
    /// size or names an unknown codec.
    init?(settings s: KVSettings) {
        guard let ct = s.chunk_tokens, ct > 0, let name = s.codec, let codec = KVCodec(rawValue: name) else {
            return nil
        }
        self.init()
        chunkTokens = ct
        self.codec = codec
        budgetBytes = s.budget_bytes ?? 0
        maxChunks = s.max_chunks ?? 0
        kivi = KIVIOptions(group: s.kivi_group ?? 64, residual: s.kivi_residual ?? 0)
    }
}
