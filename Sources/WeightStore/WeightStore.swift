import Foundation
import WStoreCore

/// A store of model weights: an LMDB environment, memory-mapped, holding tensor
/// records under model namespaces, with an index of MoE experts.
///
/// Open it once per process and share it: every method is safe to call from many
/// threads and tasks at once. Reads see one consistent snapshot each; writes are
/// serialized.
///
///     let store = try WeightStore.create(at: "model.wstore")
///     try store.put("w", dtype: .bf16, shape: [4096, 4096], bytes: raw)
///     try store.withTensor("w") { bytes, info in use(bytes) }   // zero-copy when raw
public final class WeightStore: Sendable {
    /// How a store is opened.
    public struct Options: Sendable {
        /// Initial map size; it grows by itself, so this only matters for tests.
        public var initialMapSize: Int = 256 << 20
        /// `false` turns off the fsync at every commit (faster bulk loads); call
        /// ``sync()`` when done.
        public var durable: Bool = true
        /// Write through the map (`MDB_WRITEMAP` with `MDB_MAPASYNC`): records are encoded
        /// straight into the file's pages and commits copy nothing, and each record's pages
        /// leave this process's memory once written, so a bulk load's resident memory stays
        /// bounded by what it holds at once. For a new store that no other process opens
        /// while it is written (lmdb.h: do not mix processes with and without
        /// `MDB_WRITEMAP`); size ``initialMapSize`` for the data, since the file is as long
        /// as the map until ``trimDataFile(at:)`` after closing. Implies `durable: false`:
        /// call ``sync()`` before relying on the data.
        package var writeMap: Bool = false
        public init() {}
    }

    /// The model namespace used when a call names none.
    public static let defaultModel = "default"

    /// The store's directory.
    public let path: String
    /// Whether writes are refused.
    public let readOnly: Bool
    let env: LMDBEnvironment
    let tensorsDB: LMDBDatabase
    let expertsDB: LMDBDatabase
    let metaDB: LMDBDatabase
    /// The `variants` sub-database (FORMAT.md §8): created with the store, or when a
    /// version-2 store is opened for writing; `nil` in a read-only handle of a store that
    /// had none when the handle was opened.
    let variantsDB: LMDBDatabase?
    /// Records shorter than this are padded so LMDB puts them on overflow pages.
    let minRecordSize: Int
    /// The store's format version (FORMAT.md §5): 1 for a store written before records
    /// were bound to their keys, 2 since. This build writes only to version-2 stores.
    public let formatVersion: Int

    private init(env: LMDBEnvironment, readOnly: Bool, create: Bool) throws {
        self.env = env
        self.path = env.path
        self.readOnly = readOnly
        do {
            self.metaDB = try env.database("meta", create: create)
            self.tensorsDB = try env.database("tensors", create: create)
            self.expertsDB = try env.database("experts", create: create)
        } catch LMDBError.notFound {
            throw WStoreError.notAStore(path: env.path, reason: "it has no wstore sub-databases")
        }
        // lmdb: a node larger than about half a page goes to overflow pages; see FORMAT.md §4.4.
        self.minRecordSize = env.pageSize / 2 + 64
        self.formatVersion =
            create
            ? Int(Record.formatVersion)
            : try Self.readMetadata(env: env, metaDB: metaDB, path: env.path).formatVersion
        do {
            self.variantsDB = try env.database(
                "variants", create: !readOnly && formatVersion >= Int(Record.formatVersion))
        } catch LMDBError.notFound {
            self.variantsDB = nil
        }
    }

    /// Creates a new, empty store in directory `path` (created if missing).
    ///
    /// - Throws: ``WStoreError/invalidArgument(_:)`` when `path` already holds a store,
    ///   ``WStoreError/io(call:path:errno:)`` when the directory cannot be made,
    ///   ``LMDBError`` when LMDB cannot create it.
    public static func create(at path: String, options: Options = Options()) throws -> WeightStore {
        let fm = FileManager.default
        if fm.fileExists(atPath: path + "/data.mdb") {
            throw WStoreError.invalidArgument("\(path) already holds a store; open it instead, or remove it first")
        }
        try Posix.makeDirectories(path)
        let env = try LMDBEnvironment.shared(path: path, readOnly: false, options: envOptions(options))
        let store = try WeightStore(env: env, readOnly: false, create: true)
        let meta = StoreMetadata(
            formatVersion: Int(Record.formatVersion), createdBy: "wstore \(wstoreVersion)",
            created: ISO8601DateFormatter().string(from: Date()))
        let json = Sealed.sealJSON([UInt8](try JSONEncoder.sorted.encode(meta)), key: Keys.storeMeta)
        try env.write { txn in try json.withUnsafeBytes { try txn.put(store.metaDB, Keys.storeMeta, $0) } }
        return store
    }

    /// Opens an existing store.
    ///
    /// - Throws: ``WStoreError/notAStore(path:reason:)`` when `path` is not a store,
    ///   ``WStoreError/newerFormat(what:found:supported:)`` when a newer wstore wrote it.
    public static func open(at path: String, readOnly: Bool = true, options: Options = Options()) throws -> WeightStore
    {
        try LMDBFile.checkReadable(directory: path)
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw WStoreError.notAStore(path: path, reason: "no such directory")
        }
        guard isDir.boolValue, FileManager.default.fileExists(atPath: path + "/data.mdb") else {
            throw WStoreError.notAStore(path: path, reason: "no data.mdb inside")
        }
        let env: LMDBEnvironment
        do {
            env = try LMDBEnvironment.shared(path: path, readOnly: readOnly, options: envOptions(options))
        } catch let e as LMDBError where e.code == .invalid || e.code == .versionMismatch {
            throw WStoreError.notAStore(path: path, reason: "data.mdb is not an LMDB environment")
        }
        return try WeightStore(env: env, readOnly: readOnly, create: false)
    }

    private static func envOptions(_ options: Options) -> LMDBEnvironment.Options {
        var o = LMDBEnvironment.Options()
        o.initialMapSize = options.initialMapSize
        o.noSync = !options.durable || options.writeMap
        o.writeMap = options.writeMap
        o.mapAsync = options.writeMap
        // Large records are read by their exact range (DataFile reads, or advised map
        // ranges), so a fault never needs to read ahead; see Environment+File.swift.
        o.noReadahead = true
        return o
    }

    /// The store-level metadata record.
    /// - Throws: ``WStoreError/notAStore(path:reason:)`` when it is missing or unreadable,
    ///   ``WStoreError/corruptRecord(name:reason:)`` when its seal does not match.
    public func metadata() throws -> StoreMetadata {
        try Self.readMetadata(env: env, metaDB: metaDB, path: path)
    }

    private static func readMetadata(env: LMDBEnvironment, metaDB: LMDBDatabase, path: String) throws -> StoreMetadata {
        // A version-2 record is sealed (FORMAT.md §2); a version-1 record is the JSON alone.
        let found: (data: Data, sealed: Bool)? = try env.withRead { txn in
            guard let v = try txn.get(metaDB, Keys.storeMeta) else { return nil }
            if let inner = Sealed.openJSON(v, key: Keys.storeMeta) { return (Data(inner), true) }
            return (Data(v), false)
        }
        guard let (data, sealed) = found else {
            throw WStoreError.notAStore(path: path, reason: "no store metadata record")
        }
        // Read the version alone first, so a newer store is refused with the right message
        // even if the rest of its metadata changed shape.
        struct Version: Decodable { let format_version: Int }
        guard let version = try? JSONDecoder().decode(Version.self, from: data) else {
            throw WStoreError.notAStore(path: path, reason: "store metadata record is not valid JSON")
        }
        guard version.format_version <= Int(Record.formatVersion) else {
            throw WStoreError.newerFormat(
                what: "store \(path)", found: version.format_version, supported: Int(Record.formatVersion))
        }
        guard version.format_version >= 1 else {
            throw WStoreError.corruptRecord(
                name: "store metadata of \(path)", reason: "format version \(version.format_version)")
        }
        guard sealed || version.format_version == 1 else {
            throw WStoreError.corruptRecord(name: "store metadata of \(path)", reason: "seal mismatch")
        }
        do {
            return try JSONDecoder().decode(StoreMetadata.self, from: data)
        } catch {
            throw WStoreError.notAStore(path: path, reason: "store metadata record is malformed: \(error)")
        }
    }

    /// Opens a sealed JSON object of a version-2 store, or returns a version-1 value as it is.
    /// - Throws: ``WStoreError/corruptRecord(name:reason:)`` when a version-2 seal does not match.
    func unsealJSON(_ bytes: UnsafeRawBufferPointer, key: [UInt8], what: @autoclosure () -> String) throws(WStoreError)
        -> Data
    {
        guard formatVersion >= 2 else { return Data(bytes) }
        guard let inner = Sealed.openJSON(bytes, key: key) else {
            throw .corruptRecord(name: what(), reason: "seal mismatch (damaged, or not the value of this key)")
        }
        return Data(inner)
    }

    /// Opens a sealed value of a version-2 store, or returns a version-1 value as it is.
    /// - Throws: ``WStoreError/corruptRecord(name:reason:)`` when a version-2 seal does not match.
    func unseal(
        _ bytes: UnsafeRawBufferPointer, key: UnsafeRawBufferPointer,
        what: @autoclosure () -> String
    ) throws(WStoreError) -> UnsafeRawBufferPointer {
        guard formatVersion >= 2 else { return bytes }
        guard let inner = Sealed.open(bytes, key: key) else {
            throw .corruptRecord(name: what(), reason: "seal mismatch (damaged, or not the value of this key)")
        }
        return inner
    }

    /// The value to store under `key`: sealed in a version-2 store.
    func seal(_ value: [UInt8], key: [UInt8]) -> [UInt8] {
        formatVersion >= 2 ? Sealed.seal(value, key: key) : value
    }

    /// The model info record of `model`, or `nil` when none was written.
    /// - Throws: ``WStoreError/corruptRecord(name:reason:)`` when it is damaged.
    public func modelInfo(_ model: String = WeightStore.defaultModel) throws -> ModelInfo? {
        let key = Keys.modelMeta(model)
        let data: Data? = try env.withRead { txn in
            try txn.get(metaDB, key).map { v in try unsealJSON(v, key: key, what: "model info \(model)") }
        }
        guard let data else { return nil }
        do { return try JSONDecoder().decode(ModelInfo.self, from: data) } catch {
            throw WStoreError.corruptRecord(name: "model info \(model)", reason: "not valid JSON")
        }
    }

    /// Writes (replaces) the model info record of `info.name`.
    public func setModelInfo(_ info: ModelInfo) throws {
        try requireWritable()
        let key = Keys.modelMeta(info.name)
        let json = Sealed.sealJSON([UInt8](try JSONEncoder.sorted.encode(info)), key: key)
        try env.write { txn in try json.withUnsafeBytes { try txn.put(metaDB, key, $0) } }
    }

    /// Refuses writes to a read-only handle, and to a version-1 store (whose readers would
    /// not read version-2 records).
    func requireWritable() throws {
        guard !readOnly else { throw WStoreError.invalidArgument("\(path) is open read-only") }
        guard formatVersion >= Int(Record.formatVersion) else {
            throw WStoreError.invalidArgument(
                "\(path) uses wstore format version \(formatVersion); run `wstore upgrade \(path)` before writing to it"
            )
        }
    }

    /// Every model namespace that holds a tensor or a model info record, sorted.
    public func models() throws -> [String] {
        try env.withRead { txn in
            var names = Set<String>()
            try txn.scan(metaDB, prefix: Keys.modelMetaPrefix) { k, _ in
                names.insert(String(decoding: k[Keys.modelMetaPrefix.count...], as: UTF8.self))
                return true
            }
            // Tensor keys start with the model and a NUL; hop from model to model.
            var prefix: [UInt8] = []
            while true {
                guard let k = try txn.firstKey(tensorsDB, atOrAfter: prefix),
                    let nul = k.firstIndex(of: 0)
                else { break }
                let m = String(decoding: k[..<nul], as: UTF8.self)
                names.insert(m)
                prefix = Keys.modelPrefix(m) + [0xFF]
            }
            return names.sorted()
        }
    }

    /// Flushes everything committed to disk (needed only with `durable: false`).
    public func sync() throws { try env.sync(force: true) }

    /// Starts writing committed pages to disk without waiting (a bulk load's hint).
    package func startWriteback() { env.startWriteback() }

    /// Bytes of the data file in use; after a ``Options/writeMap`` load, the length to
    /// give ``trimDataFile(at:to:)``.
    package var usedBytes: Int { env.usedBytes }

    /// Shortens the data file of the closed store at `path` to `bytes` (its
    /// ``usedBytes``, read before it was closed): a store written with
    /// ``Options/writeMap`` leaves its file as long as its map, mostly a hole.
    package static func trimDataFile(at path: String, to bytes: Int) throws {
        try LMDBEnvironment.trimDataFile(path: path, to: bytes)
    }

    /// Bytes of the store's map (grows as the store does).
    public var mapSize: Int { env.mapSize }
}

extension JSONEncoder {
    static var sorted: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return e
    }
}
