import Foundation
import Testing
import WStoreTestSupport

@testable import WStoreCore
@testable import WeightStore

@Suite struct DurabilityTests {
    /// Flips one byte of `file` at the first occurrence of `pattern` (plus `delta`).
    func flipByte(in file: String, at pattern: [UInt8], delta: Int = 0) throws {
        var data = try Data(contentsOf: URL(fileURLWithPath: file))
        guard let r = data.firstRange(of: Data(pattern)) else {
            Issue.record("pattern not found in \(file)")
            return
        }
        data[r.lowerBound + delta] ^= 0x5A
        try data.write(to: URL(fileURLWithPath: file))
    }

    @Test func aFlippedPayloadByteIsAChecksumErrorNeverWrongData() throws {
        let dir = TemporaryDirectory()
        let raw = randomBytes(50_000, seed: 11)
        let packed = weightLikeBF16(200_000, seed: 12)
        do {
            let store = try WeightStore.create(at: dir.sub("s"))
            try raw.withUnsafeBytes { _ = try store.put("raw", dtype: .u8, shape: [50_000], bytes: $0, codec: .raw) }
            try packed.withUnsafeBytes {
                _ = try store.put("packed", dtype: .bf16, shape: [200_000], bytes: $0, codec: .zstd)
            }
            try store.sync()
        }
        let file = dir.sub("s/data.mdb")
        // Damage the raw payload in the middle.
        try flipByte(in: file, at: Array(raw[20_000 ..< 20_032]), delta: 7)
        let store = try WeightStore.open(at: dir.sub("s"))
        do {
            _ = try store.readBytes("raw")
            Issue.record("damaged raw tensor was returned")
        } catch let e as WStoreError {
            guard case .checksumMismatch(let name, _, _) = e else {
                Issue.record("unexpected \(e)")
                return
            }
            #expect(name == "default/raw")
        }
        #expect(throws: WStoreError.self) { try store.withTensor("raw", verify: true) { _, _ in } }
        var out = [UInt8](repeating: 0, count: raw.count)
        for path in [ReadPath.file, .fileDropCache] {
            #expect(throws: WStoreError.self, "\(path)") {
                try out.withUnsafeMutableBytes { _ = try store.read("raw", into: $0, path: path) }
            }
        }
        #expect(try store.readBytes("packed") == packed)  // the neighbour is intact
        let report = try store.verify()
        #expect(report.tensorsChecked == 2)
        #expect(report.failures.map(\.name) == ["raw"])
    }

    @Test func aFlippedCompressedByteIsAnErrorNeverWrongData() throws {
        // Damage every position of a compressed payload in turn: each must be an
        // error (checksum or corrupt frame), never the wrong bytes and never a crash.
        let packed = weightLikeBF16(4096, seed: 3)
        var options = EncodeOptions()
        options.codec = .zstd
        options.frameSize = 2048
        let record = try packed.withUnsafeBytes {
            try RecordEncoder.encode($0, dtype: .bf16, shape: [4096], binding: 0, options: options)
        }
        var bytes = [UInt8](repeating: 0, count: record.totalSize)
        packed.withUnsafeBytes { s in bytes.withUnsafeMutableBytes { record.write(into: $0, source: s) } }
        var errors = 0
        for position in stride(from: 0, to: bytes.count, by: 7) {
            var damaged = bytes
            damaged[position] ^= 0x01
            do {
                try damaged.withUnsafeBytes { rec in
                    let view = try RecordView(rec, binding: 0, name: "t")
                    // Each worker checks the frames it decodes, on one thread or two.
                    let threads = position % 2 + 1
                    var out = [UInt8](repeating: 0, count: view.rawSize)
                    try out.withUnsafeMutableBytes {
                        try RecordDecoder.decode(view, name: "t", into: $0, threads: threads)
                    }
                    // Reaching here means the damage hit padding that no reader uses.
                    #expect(out == packed)
                }
            } catch is WStoreError {
                errors += 1
            }
        }
        #expect(errors > bytes.count / 7 / 2)
    }

    @Test func truncatedOrLyingHeadersAreCorruptRecords() throws {
        let src = randomBytes(1000, seed: 1)
        let record = try src.withUnsafeBytes {
            try RecordEncoder.encode($0, dtype: .u8, shape: [1000], binding: 0, options: EncodeOptions())
        }
        var bytes = [UInt8](repeating: 0, count: record.totalSize)
        src.withUnsafeBytes { s in bytes.withUnsafeMutableBytes { record.write(into: $0, source: s) } }
        for cut in [0, 10, 63, 100, bytes.count - 1] {
            #expect(throws: WStoreError.self) {
                try Array(bytes[..<cut]).withUnsafeBytes { _ = try RecordView($0, binding: 0, name: "t") }
            }
        }
        var lying = bytes
        lying[24] = 0xFF  // raw size, without fixing the header checksum
        #expect(throws: WStoreError.self) {
            try lying.withUnsafeBytes { _ = try RecordView($0, binding: 0, name: "t") }
        }
    }

    @Test func readersSeeConsistentSnapshotsWhileAWriterCommits() async throws {
        let dir = TemporaryDirectory()
        let store = try WeightStore.create(at: dir.sub("s"))
        func generation(_ g: Int) -> [UInt8] { [UInt8](repeating: UInt8(g % 251), count: 10_000) }
        try store.write { w in
            for name in ["a", "b"] {
                try generation(0).withUnsafeBytes {
                    _ = try w.put(name, dtype: .u8, shape: [10_000], bytes: $0, codec: .raw)
                }
            }
        }
        let rounds = 200
        try await withThrowingTaskGroup(of: Int.self) { group in
            group.addTask {
                for g in 1 ... rounds {
                    try store.write { w in
                        for name in ["a", "b"] {
                            try generation(g).withUnsafeBytes {
                                _ = try w.put(name, dtype: .u8, shape: [10_000], bytes: $0, codec: .raw)
                            }
                        }
                    }
                }
                return 0
            }
            for _ in 0 ..< 3 {
                group.addTask {
                    var inconsistent = 0, last = 0
                    for _ in 0 ..< 400 {
                        try store.withSnapshot { s in
                            let a = try s.withTensor("a") { b, _ in (b.first!, b.allSatisfy { $0 == b.first! }) }
                            let b = try s.withTensor("b") { b, _ in b.first! }
                            if a.0 != b || !a.1 { inconsistent += 1 }
                            last = Int(a.0)
                        }
                    }
                    _ = last
                    return inconsistent
                }
            }
            var total = 0
            for try await n in group { total += n }
            #expect(total == 0)
        }
        #expect(try store.readBytes("a") == generation(rounds))
    }

    @Test func theMapGrowsFarPastItsInitialSize() throws {
        let dir = TemporaryDirectory()
        var options = WeightStore.Options()
        options.initialMapSize = 1 << 20
        let store = try WeightStore.create(at: dir.sub("s"), options: options)
        let initial = store.mapSize
        let chunk = randomBytes(3 << 20, seed: 4)
        for i in 0 ..< 12 {  // 36 MiB into a 1 MiB map
            try chunk.withUnsafeBytes {
                _ = try store.put("c\(i)", dtype: .u8, shape: [chunk.count], bytes: $0, codec: .raw)
            }
        }
        // One transaction far larger than the map, too.
        try store.write { w in
            for i in 0 ..< 6 {
                try chunk.withUnsafeBytes {
                    _ = try w.put("batch\(i)", dtype: .u8, shape: [chunk.count], bytes: $0, codec: .raw)
                }
            }
        }
        #expect(store.mapSize >= 32 * initial)
        let reopened = try WeightStore.open(at: dir.sub("s"))
        #expect(try reopened.tensors().count == 18)
        #expect(try reopened.readBytes("c11") == chunk)
        #expect(try reopened.readBytes("batch5") == chunk)
    }
}

@Suite struct SharedEnvironmentTests {
    @Test func oneStoreOpenTwiceSharesItsEnvironment() throws {
        let dir = TemporaryDirectory()
        let a = try WeightStore.create(at: dir.sub("s"))
        try randomBytes(8, seed: 1).withUnsafeBytes { _ = try a.put("x", dtype: .u8, shape: [8], bytes: $0) }
        let b = try WeightStore.open(at: dir.sub("s"))
        #expect(a.env === b.env)
        #expect(try b.readBytes("x") == randomBytes(8, seed: 1))
    }

    @Test func aStoreMovedIntoAnOpenStoresPathIsANewStore() throws {
        let dir = TemporaryDirectory()
        let old = try WeightStore.create(at: dir.sub("s"))
        try randomBytes(8, seed: 1).withUnsafeBytes { _ = try old.put("x", dtype: .u8, shape: [8], bytes: $0) }
        do {
            let new = try WeightStore.create(at: dir.sub("new"))
            try randomBytes(8, seed: 2).withUnsafeBytes { _ = try new.put("x", dtype: .u8, shape: [8], bytes: $0) }
        }
        // What an atomic replace does, while `old` is still open in this process.
        try FileManager.default.moveItem(atPath: dir.sub("s"), toPath: dir.sub("retired"))
        try FileManager.default.moveItem(atPath: dir.sub("new"), toPath: dir.sub("s"))
        let reopened = try WeightStore.open(at: dir.sub("s"))
        #expect(reopened.env !== old.env)
        #expect(try reopened.readBytes("x") == randomBytes(8, seed: 2))
        #expect(try old.readBytes("x") == randomBytes(8, seed: 1))
    }
}
