import Foundation
import Testing
import WStoreTestSupport

@testable import WStoreCore
@testable import WeightStore

@Suite struct ErrorTests {
    @Test func badArgumentsAreRefusedAndWriteNothing() throws {
        let dir = TemporaryDirectory()
        let store = try WeightStore.create(at: dir.sub("s"))
        let b = randomBytes(10, seed: 1)
        #expect(throws: WStoreError.self) {
            try b.withUnsafeBytes { _ = try store.put("x", dtype: .f32, shape: [3], bytes: $0) }
        }
        #expect(throws: WStoreError.self) {
            try b.withUnsafeBytes { _ = try store.put("", dtype: .u8, shape: [10], bytes: $0) }
        }
        #expect(throws: WStoreError.self) {
            try b.withUnsafeBytes {
                _ = try store.put(String(repeating: "n", count: 600), dtype: .u8, shape: [10], bytes: $0)
            }
        }
        #expect(try store.tensors().isEmpty)
        #expect(throws: WStoreError.notFound("tensor missing in model default")) { try store.info("missing") }
    }

    @Test func openingWhatIsNotAStoreSaysSo() throws {
        let dir = TemporaryDirectory()
        #expect(throws: WStoreError.self) { _ = try WeightStore.open(at: dir.sub("nope")) }
        #expect(throws: WStoreError.self) { _ = try WeightStore.open(at: dir.path) }
        try Data("not lmdb".utf8).write(to: URL(fileURLWithPath: dir.sub("data.mdb")))
        #expect(throws: WStoreError.notAStore(path: dir.path, reason: "data.mdb is not an LMDB environment")) {
            _ = try WeightStore.open(at: dir.path)
        }
        // Creating over an existing store is refused and leaves it as it was.
        let s = try WeightStore.create(at: dir.sub("s"))
        try randomBytes(4, seed: 1).withUnsafeBytes { _ = try s.put("a", dtype: .u8, shape: [4], bytes: $0) }
        #expect(throws: WStoreError.self) { _ = try WeightStore.create(at: dir.sub("s")) }
        #expect(try WeightStore.open(at: dir.sub("s")).readBytes("a") == randomBytes(4, seed: 1))
    }

    @Test func readOnlyStoreRefusesWrites() throws {
        let dir = TemporaryDirectory()
        _ = try WeightStore.create(at: dir.sub("s"))
        let ro = try WeightStore.open(at: dir.sub("s"))
        #expect(throws: WStoreError.self) {
            try [UInt8(1)].withUnsafeBytes { _ = try ro.put("a", dtype: .u8, shape: [1], bytes: $0) }
        }
    }

    @Test func storeOfANewerFormatIsRefusedNamingBothVersions() throws {
        let dir = TemporaryDirectory()
        do {
            let store = try WeightStore.create(at: dir.sub("s"))
            let json = Data(
                #"{"format_version":7,"created_by":"wstore 9","created":"2030-01-01T00:00:00Z","new_field":1}"#.utf8)
            try store.env.write { txn in try json.withUnsafeBytes { try txn.put(store.metaDB, Keys.storeMeta, $0) } }
        }
        do {
            _ = try WeightStore.open(at: dir.sub("s"))
            Issue.record("a newer store opened")
        } catch let e as WStoreError {
            #expect(e == .newerFormat(what: "store \(dir.sub("s"))", found: 7, supported: 2))
            #expect(e.description.contains("version 7") && e.description.contains("up to 2"))
        }
    }

    @Test func recordOfANewerFormatIsRefused() throws {
        let dir = TemporaryDirectory()
        let store = try WeightStore.create(at: dir.sub("s"))
        try randomBytes(64, seed: 1).withUnsafeBytes {
            _ = try store.put("a", dtype: .u8, shape: [64], bytes: $0, codec: .raw)
        }
        // Rewrite the record with version 3 and a correct header checksum.
        try store.env.write { txn in
            let key = Keys.tensor(model: WeightStore.defaultModel, name: "a")
            var rec = Array(try txn.get(store.tensorsDB, key)!)
            rec[4] = 3
            let hl = Int(rec[8]) | Int(rec[9]) << 8
            let sum = rec.withUnsafeBytes {
                Record.headerChecksum($0, headerLength: hl, binding: Record.binding(key: key))
            }
            withUnsafeBytes(of: sum.littleEndian) { for i in 0 ..< 8 { rec[56 + i] = $0[i] } }
            try rec.withUnsafeBytes { try txn.put(store.tensorsDB, key, $0) }
        }
        #expect(throws: WStoreError.newerFormat(what: "tensor default/a", found: 3, supported: 2)) {
            try store.info("a")
        }
    }
}
