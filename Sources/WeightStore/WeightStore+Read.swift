import WStoreCore

extension WeightStore {
    /// One consistent, read-only view of the store, lent to a ``WeightStore/withSnapshot(_:)``
    /// closure. Everything read through it sees the same committed state.
    ///
    /// - Warning: buffers it lends point into the memory map and are valid only inside
    ///   the closure they are lent to.
    public struct Snapshot: ~Copyable {
        let txn: ReadTransaction
        let store: WeightStore

        /// The record of `name`, validated and checked against its key; `nil` when absent.
        /// With `payload`, the caller is about to read the payload: a cold record is asked
        /// for by its exact range before its header is read, so it arrives in one request,
        /// with nothing read ahead past it.
        func record(_ name: String, model: String, payload: Bool = false) throws -> RecordView? {
            let key = try store.tensorKey(model: model, name: name)
            guard let bytes = try txn.get(store.tensorsDB, key) else { return nil }
            if payload { store.env.prepareToRead(bytes) }
            return try store.view(bytes, key: key.withUnsafeBytes { Record.binding(key: $0) }, name: "\(model)/\(name)")
        }

        /// Asks for the records of `names` at once, each by its exact range
        /// (``LMDBEnvironment/prepareToRead(_:)``), before any of them is read: reading
        /// them one after the other (the parts of an expert) then finds the later ones
        /// arriving while the earlier ones decode, and the disk is not left idle between
        /// parts. Costs three mincore calls a record when they are in memory already;
        /// names that are absent are skipped (their read reports them).
        package func prepareToRead(_ names: [String], model: String) throws {
            guard names.count > 1 else { return }
            for name in names {
                if let bytes = try txn.get(store.tensorsDB, store.tensorKey(model: model, name: name)) {
                    store.env.prepareToRead(bytes)
                }
            }
        }

        func requireRecord(_ name: String, model: String, payload: Bool = false) throws -> RecordView {
            guard let r = try record(name, model: model, payload: payload) else {
                throw WStoreError.notFound("tensor \(name) in model \(model)")
            }
            return r
        }

        /// What the store knows of tensor `name`.
        /// - Throws: ``WStoreError/notFound(_:)``, or a corrupt-record error.
        public func info(_ name: String, model: String = WeightStore.defaultModel) throws -> TensorInfo {
            TensorInfo(model: model, name: name, record: try requireRecord(name, model: model))
        }

        /// Whether tensor `name` exists.
        public func contains(_ name: String, model: String = WeightStore.defaultModel) throws -> Bool {
            try txn.get(store.tensorsDB, store.tensorKey(model: model, name: name)) != nil
        }

        /// Lends the bytes of raw tensor `name`, in place in the memory map (zero-copy).
        ///
        /// The payload of a record on LMDB overflow pages starts 64-byte aligned.
        /// - Parameter verify: check the xxh3-64 of the bytes first (reads every byte).
        /// - Throws: ``WStoreError/notRaw(name:codec:)`` for a compressed record: use
        ///   ``read(_:model:into:threads:)``.
        /// - Warning: `bytes` is valid only inside `body`.
        public func withTensor<R>(
            _ name: String, model: String = WeightStore.defaultModel, verify: Bool = false,
            _ body: (_ bytes: UnsafeRawBufferPointer, _ info: TensorInfo) throws -> R
        ) throws -> R {
            let r = try requireRecord(name, model: model, payload: true)
            guard r.codec == .raw else { throw WStoreError.notRaw(name: name, codec: r.codec.name) }
            if verify { try RecordDecoder.verify(r, name: "\(model)/\(name)", r.payload, threads: 1) }
            return try body(r.payload, TensorInfo(model: model, name: name, record: r))
        }

        /// Decodes tensor `name` into `buffer` (exactly its raw size), frames on up to
        /// `threads` threads, and checks its checksum. Works for raw records too (a copy).
        ///
        /// - Parameter verify: for a raw record, whether to check the checksum of the copy
        ///   (hashing costs about as much as copying); a compressed record is always checked.
        /// - Throws: ``WStoreError/checksumMismatch(name:expected:actual:)`` rather than
        ///   return wrong bytes.
        /// - Parameter path: where the record's bytes come from (``ReadPath``).
        @discardableResult
        public func read(
            _ name: String, model: String = WeightStore.defaultModel,
            into buffer: UnsafeMutableRawBufferPointer, threads: Int = 1,
            verify: Bool = true, path: ReadPath = .map
        ) throws -> TensorInfo {
            let r = try requireRecord(name, model: model, payload: true)
            try store.decode(r, label: "\(model)/\(name)", into: buffer, threads: threads, verify: verify, path: path)
            return TensorInfo(model: model, name: name, record: r)
        }

        /// Every tensor of `model`, in name order.
        public func tensors(model: String = WeightStore.defaultModel) throws -> [TensorInfo] {
            let prefix = Keys.modelPrefix(model)
            var out: [TensorInfo] = []
            var failure: (any Error)?
            try txn.scan(store.tensorsDB, prefix: prefix) { k, v in
                let name = String(decoding: k[prefix.count...], as: UTF8.self)
                do {
                    let r = try store.view(v, key: Record.binding(key: k), name: "\(model)/\(name)")
                    out.append(TensorInfo(model: model, name: name, record: r))
                } catch {
                    failure = error
                    return false
                }
                return true
            }
            if let failure { throw failure }
            return out
        }

        /// Every tensor name of `model`, without parsing records.
        public func tensorNames(model: String = WeightStore.defaultModel) throws -> [String] {
            let prefix = Keys.modelPrefix(model)
            var out: [String] = []
            try txn.scan(store.tensorsDB, prefix: prefix) { k, _ in
                out.append(String(decoding: k[prefix.count...], as: UTF8.self))
                return true
            }
            return out
        }

        /// Every indexed expert of `model`, by (layer, expert).
        public func experts(model: String = WeightStore.defaultModel, layer: Int? = nil) throws -> [ExpertEntry] {
            let modelPrefix = Keys.modelPrefix(model)
            let prefix = layer.map { Keys.expertPrefix(model: model, layer: $0) } ?? modelPrefix
            var out: [ExpertEntry] = []
            var current: (layer: Int, expert: Int, parts: [String: String])?
            var failure: (any Error)?
            try txn.scan(store.expertsDB, prefix: prefix) { k, v in
                guard let key = Keys.parseExpert(k, prefixLength: modelPrefix.count) else { return true }
                let tensor: String
                do { tensor = try store.expertTensor(v, key: k, model: model) } catch {
                    failure = error
                    return false
                }
                if let c = current, c.layer == key.layer, c.expert == key.expert {
                    current!.parts[key.part] = tensor
                } else {
                    if let c = current { out.append(ExpertEntry(layer: c.layer, expert: c.expert, parts: c.parts)) }
                    current = (key.layer, key.expert, [key.part: tensor])
                }
                return true
            }
            if let failure { throw failure }
            if let c = current { out.append(ExpertEntry(layer: c.layer, expert: c.expert, parts: c.parts)) }
            return out
        }

        /// The tensors of one expert, part name → tensor name; `nil` when not indexed.
        public func expert(layer: Int, expert: Int, model: String = WeightStore.defaultModel) throws -> ExpertEntry? {
            let modelPrefix = Keys.modelPrefix(model)
            var parts: [String: String] = [:]
            var failure: (any Error)?
            try txn.scan(store.expertsDB, prefix: Keys.expertPrefix(model: model, layer: layer, expert: expert)) {
                k, v in
                if let key = Keys.parseExpert(k, prefixLength: modelPrefix.count) {
                    do { parts[key.part] = try store.expertTensor(v, key: k, model: model) } catch {
                        failure = error
                        return false
                    }
                }
                return true
            }
            if let failure { throw failure }
            return parts.isEmpty ? nil : ExpertEntry(layer: layer, expert: expert, parts: parts)
        }
    }

    /// Runs `body` on one consistent snapshot of the store.
    /// - Warning: do not write to the store from inside `body`.
    public func withSnapshot<R>(_ body: (borrowing Snapshot) throws -> R) throws -> R {
        try env.withRead { txn in try body(Snapshot(txn: txn.view(), store: self)) }
    }

    /// See ``Snapshot/info(_:model:)``.
    public func info(_ name: String, model: String = WeightStore.defaultModel) throws -> TensorInfo {
        try withSnapshot { try $0.info(name, model: model) }
    }

    /// See ``Snapshot/withTensor(_:model:verify:_:)``.
    public func withTensor<R>(
        _ name: String, model: String = WeightStore.defaultModel, verify: Bool = false,
        _ body: (_ bytes: UnsafeRawBufferPointer, _ info: TensorInfo) throws -> R
    ) throws -> R {
        try withSnapshot { try $0.withTensor(name, model: model, verify: verify, body) }
    }

    /// See ``Snapshot/read(_:model:into:threads:verify:path:)``.
    @discardableResult
    public func read(
        _ name: String, model: String = WeightStore.defaultModel,
        into buffer: UnsafeMutableRawBufferPointer, threads: Int = defaultThreadCount,
        verify: Bool = true, path: ReadPath = .map
    ) throws -> TensorInfo {
        try withSnapshot { try $0.read(name, model: model, into: buffer, threads: threads, verify: verify, path: path) }
    }

    /// Decodes tensor `name` into a new array.
    public func readBytes(
        _ name: String, model: String = WeightStore.defaultModel,
        threads: Int = defaultThreadCount
    ) throws -> [UInt8] {
        try withSnapshot { s in
            let info = try s.info(name, model: model)
            var out = [UInt8](repeating: 0, count: info.rawSize)
            try out.withUnsafeMutableBytes { _ = try s.read(name, model: model, into: $0, threads: threads) }
            return out
        }
    }

    /// See ``Snapshot/tensors(model:)``.
    public func tensors(model: String = WeightStore.defaultModel) throws -> [TensorInfo] {
        try withSnapshot { try $0.tensors(model: model) }
    }

    /// See ``Snapshot/experts(model:layer:)``.
    public func experts(model: String = WeightStore.defaultModel, layer: Int? = nil) throws -> [ExpertEntry] {
        try withSnapshot { try $0.experts(model: model, layer: layer) }
    }
}

extension WeightStore {
    /// Decodes (or copies) record `r` into `buffer` from where `path` says, every frame or
    /// block checked (raw blocks only with `verify`).
    func decode(
        _ r: RecordView, label: String, into buffer: UnsafeMutableRawBufferPointer, threads: Int, verify: Bool,
        path: ReadPath
    ) throws {
        switch path {
        case .map:
            try RecordDecoder.decode(r, name: label, into: buffer, threads: threads, verify: verify)
        case .file, .fileDropCache:
            if try !RecordDecoder.decodeFromFile(
                r, env: env, name: label, into: buffer, threads: threads, verify: verify,
                dropCache: path == .fileDropCache)
            {
                try RecordDecoder.decode(r, name: label, into: buffer, threads: threads, verify: verify)
            }
        }
    }

    /// Parses a record read under a key with binding `binding`; in a version-2 store,
    /// refuses a version-1 record (which is not bound to its key).
    func view(_ bytes: UnsafeRawBufferPointer, key binding: UInt64, name: String) throws -> RecordView {
        let r = try RecordView(bytes, binding: binding, name: name)
        if formatVersion >= 2 && r.version < 2 {
            throw WStoreError.corruptRecord(
                name: name, reason: "record version \(r.version) in a version-\(formatVersion) store")
        }
        return r
    }

    /// The tensor name an `experts` entry holds, unsealed and checked as a name.
    func expertTensor(_ value: UnsafeRawBufferPointer, key: UnsafeRawBufferPointer, model: String) throws -> String {
        let inner = try unseal(value, key: key, what: "expert index entry of model \(model)")
        guard let name = String(validating: inner, as: UTF8.self), !name.isEmpty else {
            throw WStoreError.corruptRecord(name: "expert index entry of model \(model)", reason: "not a tensor name")
        }
        return name
    }
}

/// The number of cores this process may use; the default thread count for decoding.
public var defaultThreadCount: Int { System.activeProcessorCount }

/// Where ``WeightStore/Snapshot/read(_:model:into:threads:verify:path:)`` takes a
/// record's bytes from.
public enum ReadPath: String, Sendable, Equatable, CaseIterable {
    /// Copied or decoded out of the memory map: the fastest when the record's pages are
    /// in memory. A cold record is first asked for by its exact range, so the faults
    /// that follow do not read ahead past it.
    case map
    /// Read from the data file with pread(2) after asking for exactly the record's
    /// range: a raw record straight into the destination, a compressed one into a
    /// scratch buffer. A cold read moves the record's bytes from disk once and maps
    /// nothing into the process. Small records (not on their own pages) come from the map.
    case file
    /// As ``file``, then the record's pages leave the page cache
    /// (`POSIX_FADV_DONTNEED`): for a caller that keeps its own decoded copy and should
    /// not also hold the stored one in memory.
    case fileDropCache = "file-drop-cache"
}
