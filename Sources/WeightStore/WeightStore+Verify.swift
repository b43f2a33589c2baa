import WStoreCore

extension WeightStore {
    /// One entry that failed verification.
    public struct VerifyFailure: Sendable, Hashable {
        /// The model, or `-` for what belongs to no model (the data file, store metadata).
        public let model: String
        /// The tensor, or what else failed (`data.mdb`, `store metadata`, `model info`,
        /// `expert L/E/part`).
        public let name: String
        /// One line: what is wrong.
        public let reason: String

        public init(model: String, name: String, reason: String) {
            self.model = model
            self.name = name
            self.reason = reason
        }
    }

    /// The outcome of ``verify(threads:)``.
    public struct VerifyReport: Sendable {
        public var tensorsChecked = 0
        public var bytesChecked = 0
        /// Expert index entries checked against the tensors they name.
        public var expertEntriesChecked = 0
        /// Variant records checked (FORMAT.md §8), with their bytes in ``bytesChecked``.
        public var variantsChecked = 0
        /// B-tree pages walked (branch, leaf and overflow).
        public var pagesChecked = 0
        public var failures: [VerifyFailure] = []

        public init() {}
    }

    /// Walks the data file's B-tree pages (``LMDBFile``) without LMDB; problems found,
    /// one line each (empty for a sound file). `wstore verify` runs it before opening a
    /// store, so that a damaged tree is reported in full instead of refused in one line.
    /// - Throws: when the file cannot be read or its meta pages are damaged or short.
    public static func checkDataFile(at path: String) throws -> (pages: Int, problems: [String]) {
        let r = try LMDBFile.walk(path: path + "/data.mdb")
        return (r.branchPages + r.leafPages + r.overflowPages, r.problems)
    }

    /// Checks everything a reader relies on, on one snapshot: the B-tree pages, the store
    /// metadata, every model's info, every tensor record (header, key binding, every frame
    /// or block checksum), and every expert index entry against the tensor it names.
    /// Damage is reported, never thrown.
    public func verify(threads: Int = defaultThreadCount) throws -> VerifyReport {
        var report = VerifyReport()
        func fail(_ model: String, _ name: String, _ error: Any) {
            report.failures.append(VerifyFailure(model: model, name: name, reason: "\(error)"))
        }
        /// Every frame decoded, or every raw block hashed, each against its checksum.
        func checkPayload(_ r: RecordView, label: String) throws {
            if r.codec == .raw {
                try RecordDecoder.verify(r, name: label, r.payload, threads: threads)
            } else {
                let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, r.rawSize), alignment: 64)
                defer { buf.deallocate() }
                try RecordDecoder.decode(
                    r, name: label, into: UnsafeMutableRawBufferPointer(rebasing: buf[0 ..< r.rawSize]),
                    threads: threads)
            }
        }
        do {
            let pages = try env.checkPages()
            report.pagesChecked = pages.branchPages + pages.leafPages + pages.overflowPages
            for p in pages.problems { fail("-", "data.mdb", p) }
            // A damaged tree is not walked with a cursor.
            if !pages.problems.isEmpty { return report }
        } catch { fail("-", "data.mdb", error) }
        do { _ = try metadata() } catch { fail("-", "store metadata", error) }

        try withSnapshot { s in
            // Every tensors key: model, NUL, a non-empty UTF-8 name.
            var keys: [(model: String, name: String)] = []
            try s.txn.scan(tensorsDB, prefix: []) { k, _ in
                guard let nul = k.firstIndex(of: 0), nul > 0, nul < k.count - 1,
                    let model = String(validating: k[..<nul], as: UTF8.self),
                    let name = String(validating: k[(nul + 1)...], as: UTF8.self)
                else {
                    fail("-", "tensors key \(Array(k.prefix(32)))", "not a model, NUL and tensor name")
                    return true
                }
                keys.append((model, name))
                return true
            }
            var present = Set<String>()
            var shapes: [String: [Int]] = [:]
            for (model, name) in keys {
                report.tensorsChecked += 1
                do {
                    let r = try s.requireRecord(name, model: model)
                    try checkPayload(r, label: "\(model)/\(name)")
                    report.bytesChecked += r.rawSize
                    present.insert(model + "\u{0}" + name)
                    shapes[model + "\u{0}" + name] = r.shape
                } catch {
                    fail(model, name, error)
                }
            }
            // Model info records.
            try s.txn.scan(metaDB, prefix: Keys.modelMetaPrefix) { k, _ in
                let model = String(decoding: k[Keys.modelMetaPrefix.count...], as: UTF8.self)
                do { _ = try modelInfo(model) } catch { fail(model, "model info", error) }
                return true
            }
            // Every expert index entry: a well-formed key, a sealed name, a tensor that is there and sound.
            try s.txn.scan(expertsDB, prefix: []) { k, v in
                report.expertEntriesChecked += 1
                guard let nul = k.firstIndex(of: 0), nul > 0, k.count > nul + 9,
                    let model = String(validating: k[..<nul], as: UTF8.self),
                    let key = Keys.parseExpert(k, prefixLength: nul + 1)
                else {
                    fail("-", "experts key \(Array(k.prefix(32)))", "not a model, NUL, layer, expert and part")
                    return true
                }
                let what = "expert \(key.layer)/\(key.expert)/\(key.part)"
                do {
                    let tensor = try expertTensor(v, key: k, model: model)
                    if !present.contains(model + "\u{0}" + tensor) {
                        fail(
                            model, what,
                            "names tensor \(tensor), which is \(keys.contains { $0 == (model, tensor) } ? "damaged" : "not in the store")"
                        )
                    }
                } catch {
                    fail(model, what, error)
                }
                return true
            }
            // Every variant: a well-formed key, a sound record of its precision, and a part that is
            // indexed, present and of the same shape.
            guard let variantsDB else { return }
            var variantKeys: [(model: String, key: ExpertKey, precision: ExpertPrecision)] = []
            try s.txn.scan(variantsDB, prefix: []) { k, _ in
                guard let nul = k.firstIndex(of: 0), nul > 0,
                    let model = String(validating: k[..<nul], as: UTF8.self),
                    let (key, p) = Keys.parseVariant(k, prefixLength: nul + 1)
                else {
                    fail(
                        "-", "variants key \(Array(k.prefix(32)))",
                        "not a model, NUL, layer, expert, part, NUL and precision")
                    return true
                }
                variantKeys.append((model, key, p))
                return true
            }
            for (model, key, p) in variantKeys {
                report.variantsChecked += 1
                let what = "variant \(key.layer)/\(key.expert)/\(key.part)@\(p)"
                do {
                    let r = try s.requireVariant(p, of: key, model: model)
                    try checkPayload(r, label: "\(model)/\(what)")
                    report.bytesChecked += r.rawSize
                    guard let entry = try s.expert(layer: key.layer, expert: key.expert, model: model),
                        let tensor = entry.parts[key.part]
                    else {
                        fail(model, what, "its part is not in the expert index")
                        continue
                    }
                    guard let shape = shapes[model + "\u{0}" + tensor] else {
                        fail(model, what, "its part's tensor \(tensor) is missing or damaged")
                        continue
                    }
                    if shape != r.shape {
                        fail(model, what, "shape \(r.shape) differs from its part's tensor \(tensor) \(shape)")
                    }
                } catch {
                    fail(model, what, error)
                }
            }
        }
        return report
    }
}
