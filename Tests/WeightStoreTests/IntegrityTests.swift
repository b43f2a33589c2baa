import Foundation
import Testing
import WStoreTestSupport

@testable import WStoreCore
@testable import WeightStore

/// Format v2: records bound to their keys, a checksum per frame and per raw block, the
/// data file checked before LMDB uses it (format-spec/FORMAT.md §3.1, §4, §7).
@Suite struct IntegrityTests {
    /// A store with two raw and two compressed tensors of the same size, and an expert.
    func makeStore(_ dir: TemporaryDirectory) throws -> (path: String, a: [UInt8], b: [UInt8]) {
        let path = dir.sub("s")
        let a = randomBytes(600_000, seed: 1), b = randomBytes(600_000, seed: 2)
        let store = try WeightStore.create(at: path)
        try store.write { w in
            try a.withUnsafeBytes { _ = try w.put("raw.a", dtype: .u8, shape: [600_000], bytes: $0, codec: .raw) }
            try b.withUnsafeBytes { _ = try w.put("raw.b", dtype: .u8, shape: [600_000], bytes: $0, codec: .raw) }
            try a.withUnsafeBytes { _ = try w.put("z.a", dtype: .u8, shape: [600_000], bytes: $0, codec: .zstd) }
            try b.withUnsafeBytes { _ = try w.put("z.b", dtype: .u8, shape: [600_000], bytes: $0, codec: .zstd) }
            try w.setExpert(ExpertKey(layer: 0, expert: 1, part: "up"), tensor: "raw.a")
        }
        return (path, a, b)
    }

    /// Swaps the values of two keys of `db`, as a damaged tree that points a key at
    /// another record would.
    func swapValues(_ store: WeightStore, _ db: LMDBDatabase, _ k1: [UInt8], _ k2: [UInt8]) throws {
        try store.env.write { txn in
            let v1 = Array(try txn.get(db, k1)!), v2 = Array(try txn.get(db, k2)!)
            try v2.withUnsafeBytes { try txn.put(db, k1, $0) }
            try v1.withUnsafeBytes { try txn.put(db, k2, $0) }
        }
    }

    @Test func aRecordUnderAnotherKeyIsCorruptNeverAnotherTensor() throws {
        let dir = TemporaryDirectory("integrity")
        let (path, _, _) = try makeStore(dir)
        let store = try WeightStore.open(at: path, readOnly: false)
        for (x, y) in [("raw.a", "raw.b"), ("z.a", "z.b")] {
            try swapValues(
                store, store.tensorsDB, Keys.tensor(model: "default", name: x), Keys.tensor(model: "default", name: y))
            for name in [x, y] {
                do {
                    _ = try store.readBytes(name)
                    Issue.record("\(name) read another tensor's bytes")
                } catch let e as WStoreError {
                    guard case .corruptRecord(let n, let reason) = e else {
                        Issue.record("unexpected \(e)")
                        continue
                    }
                    #expect(n == "default/\(name)")
                    #expect(reason.contains("not the record of this key"))
                }
                #expect(throws: WStoreError.self) { try store.withTensor(name) { _, _ in } }
            }
        }
        let report = try store.verify()
        #expect(Set(report.failures.map(\.name)) == ["raw.a", "raw.b", "z.a", "z.b", "expert 0/1/up"])
    }

    @Test func anExpertEntryUnderAnotherKeyIsCorrupt() throws {
        let dir = TemporaryDirectory("integrity")
        let (path, _, _) = try makeStore(dir)
        let store = try WeightStore.open(at: path, readOnly: false)
        let other = ExpertKey(layer: 0, expert: 2, part: "up")
        try store.write { w in try w.setExpert(other, tensor: "raw.b") }
        try swapValues(
            store, store.expertsDB, Keys.expert(model: "default", ExpertKey(layer: 0, expert: 1, part: "up")),
            Keys.expert(model: "default", other))
        #expect(throws: WStoreError.self) { try store.experts() }
        #expect(try store.verify().failures.map(\.name) == ["expert 0/1/up", "expert 0/2/up"])
    }

    @Test func damagedModelInfoAndMetadataAreReportedNotRead() throws {
        let dir = TemporaryDirectory("integrity")
        let (path, _, _) = try makeStore(dir)
        let store = try WeightStore.open(at: path, readOnly: false)
        try store.setModelInfo(ModelInfo(name: "default", layers: 2, expertsPerLayer: 4, topK: 2, sources: []))
        try store.env.write { txn in
            var v = Array(try txn.get(store.metaDB, Keys.modelMeta("default"))!)
            // "layers":2 becomes "layers":3: still valid JSON, no longer the sealed value.
            let i = v.indices.first { v[$0] == UInt8(ascii: "2") }!
            v[i] = UInt8(ascii: "3")
            try v.withUnsafeBytes { try txn.put(store.metaDB, Keys.modelMeta("default"), $0) }
        }
        #expect(throws: WStoreError.self) { try store.modelInfo("default") }
        #expect(try store.verify().failures.map(\.name) == ["model info"])
    }

    @Test func eachFrameAndBlockIsCheckedOnItsOwn() throws {
        // 600,000 bytes: three 256 KiB blocks raw; frames of 64 KiB compressed.
        var options = EncodeOptions()
        options.codec = .zstd
        options.frameSize = 64 << 10
        let src = randomBytes(600_000, seed: 5)
        for codec in [CodecChoice.raw, .zstd] {
            options.codec = codec
            let rec = try src.withUnsafeBytes {
                try RecordEncoder.encode($0, dtype: .u8, shape: [600_000], binding: 9, options: options)
            }
            var bytes = [UInt8](repeating: 0, count: rec.totalSize)
            src.withUnsafeBytes { s in bytes.withUnsafeMutableBytes { rec.write(into: $0, source: s) } }
            let view0 = try bytes.withUnsafeBytes { try RecordView($0, binding: 9, name: "t") }
            #expect(view0.hasFrameChecksums)
            #expect(view0.frameCount == (codec == .raw ? 3 : 10))
            // Under another key the header does not check.
            #expect(throws: WStoreError.self) {
                try bytes.withUnsafeBytes { _ = try RecordView($0, binding: 8, name: "t") }
            }
            let headerLength = view0.headerLength
            let last = headerLength + view0.storedSize - 1
            bytes[last] ^= 0x40
            for threads in [1, 2] {
                var out = [UInt8](repeating: 0, count: 600_000)
                do {
                    try bytes.withUnsafeBytes { b in
                        let v = try RecordView(b, binding: 9, name: "t")
                        try out.withUnsafeMutableBytes {
                            try RecordDecoder.decode(v, name: "t", into: $0, threads: threads)
                        }
                    }
                    Issue.record("damaged \(codec) record decoded")
                } catch let e as WStoreError {
                    // The last frame or block is named.
                    let expected = "t (frame \(view0.frameCount - 1))"
                    switch e {
                    case .checksumMismatch(let name, _, _): #expect(name == expected)
                    case .corruptRecord(let name, _): #expect(name == "t")
                    default: Issue.record("unexpected \(e)")
                    }
                }
            }
        }
    }

    @Test func aTruncatedDataFileIsRefusedAtOpen() throws {
        let dir = TemporaryDirectory("integrity")
        let (path, _, _) = try makeStore(dir)
        let file = path + "/data.mdb"
        let size = try FileManager.default.attributesOfItem(atPath: file)[.size] as! Int
        for cut in [8192, size / 2, size - 4096] {
            let copy = dir.sub("cut\(cut)")
            try FileManager.default.createDirectory(atPath: copy, withIntermediateDirectories: true)
            let data = try Data(contentsOf: URL(fileURLWithPath: file)).prefix(cut)
            try data.write(to: URL(fileURLWithPath: copy + "/data.mdb"))
            do {
                _ = try WeightStore.open(at: copy)
                Issue.record("a store cut to \(cut) of \(size) bytes opened")
            } catch let e as WStoreError {
                guard case .damagedFile = e else {
                    Issue.record("unexpected \(e)")
                    continue
                }
                #expect(e.description.contains("truncated"))
                #expect(!e.description.contains("\n"))
            }
        }
    }

    @Test func aDamagedLeafPageIsRefusedBeforeLMDBReadsIt() throws {
        let dir = TemporaryDirectory("integrity")
        let (path, _, _) = try makeStore(dir)
        let file = path + "/data.mdb"
        let meta = try LMDBFile.readMeta(path: file)
        var data = try Data(contentsOf: URL(fileURLWithPath: file))
        // Find the leaf page of the experts tree (written by one transaction, so it is in use,
        // not an older copy on the free list) and break its flags (leaf becomes branch).
        let expertKey = Data(Array("default".utf8) + [0, 0, 0, 0, 0, 0, 0, 0, 1] + Array("up".utf8))
        var damaged = false
        for p in 2 ... Int(meta.lastPage) {
            let o = p * meta.pageSize
            if data[o + 10] == 0x02 && data[o + 11] == 0,
                data[o ..< o + meta.pageSize].range(of: expertKey) != nil
            {
                data[o + 10] = 0x01
                damaged = true
                break
            }
        }
        #expect(damaged)
        try data.write(to: URL(fileURLWithPath: file))
        #expect(throws: WStoreError.self) { _ = try WeightStore.open(at: path) }
        let (_, problems) = try WeightStore.checkDataFile(at: path)
        #expect(!problems.isEmpty)
    }

    @Test func aVersionOneStoreIsReadAndRefusesWrites() throws {
        // A version-1 store, made by hand as a v1 writer did: unsealed metadata and a v1 record.
        let dir = TemporaryDirectory("integrity")
        let path = dir.sub("v1")
        let src = randomBytes(1000, seed: 3)
        do {
            let store = try WeightStore.create(at: path)
            try src.withUnsafeBytes { _ = try store.put("t", dtype: .u8, shape: [1000], bytes: $0, codec: .raw) }
            try store.env.write { txn in
                let json = Data(
                    #"{"created":"2026-01-01T00:00:00Z","created_by":"wstore 0.1.0","format_version":1}"#.utf8)
                try json.withUnsafeBytes { try txn.put(store.metaDB, Keys.storeMeta, $0) }
                // Version-1 raw record: no blocks, header checksum with seed 0.
                let key = Keys.tensor(model: "default", name: "t")
                var rec = Array(try txn.get(store.tensorsDB, key)!)
                let hl = Record.headerLength(rank: 1, tableEntries: 0)
                var v1 = Array(rec[0 ..< hl]) + src
                v1.withUnsafeMutableBytes { b in
                    b.storeBytes(of: UInt16(1).littleEndian, toByteOffset: 4, as: UInt16.self)
                    b.storeBytes(of: UInt32(hl).littleEndian, toByteOffset: 8, as: UInt32.self)
                    b.storeBytes(of: UInt32(0), toByteOffset: 48, as: UInt32.self)
                    b.storeBytes(of: UInt32(0), toByteOffset: 52, as: UInt32.self)
                    for i in 72 ..< hl { b[i] = 0 }
                    b.storeBytes(
                        of: Record.headerChecksum(UnsafeRawBufferPointer(b), headerLength: hl, binding: 0).littleEndian,
                        toByteOffset: 56, as: UInt64.self)
                }
                rec = v1 + [UInt8](repeating: 0, count: max(0, store.minRecordSize - v1.count))
                try rec.withUnsafeBytes { try txn.put(store.tensorsDB, key, $0) }
            }
        }
        let store = try WeightStore.open(at: path, readOnly: false)
        #expect(store.formatVersion == 1)
        #expect(try store.readBytes("t") == src)
        #expect(try store.info("t").frameCount == 0)
        #expect(try store.verify().failures.isEmpty)
        #expect(throws: WStoreError.self) {
            try src.withUnsafeBytes { _ = try store.put("u", dtype: .u8, shape: [1000], bytes: $0) }
        }
    }
}
