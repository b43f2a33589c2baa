import Foundation
import Testing
import WStoreTestSupport

@testable import KVCache
@testable import WStoreCore

/// Deferred commits and their marker (format-spec/KV.md §9). A killed writer is in
/// CABITests (`deferredKVCommitsOutliveAKilledWriter`).
@Suite struct KVDurabilityTests {
    let kvs = KVStoreTests()

    func options() -> KVStore.Options {
        var o = KVStore.Options()
        o.chunkTokens = 4
        return o
    }

    func marker(_ dir: String) -> String { dir + "/" + DeferredCommits.fileName }

    func readMarker(_ dir: String) throws -> DeferredCommits.Marker? {
        guard FileManager.default.fileExists(atPath: marker(dir)) else { return nil }
        return DeferredCommits.Marker.decode(try Posix.readFile(marker(dir)))
    }

    /// Writes a marker as a deferred writer of boot `boot` would have left it.
    func leaveMarker(_ dir: String, boot: String, options: KVStore.Options) throws {
        let m = DeferredCommits.Marker(
            format: DeferredCommits.formatName, boot_id: boot, settings: KVSettings(options, version: 2))
        try Data(try m.encoded()).write(to: URL(fileURLWithPath: marker(dir)))
    }

    @Test func theMarkerLivesWhileAnyHandleDefersAndTheWritesComeBack() throws {
        let tmp = TemporaryDirectory("deferred")
        let dir = tmp.path + "/kv"
        let a: [UInt32] = Array(1 ... 12), b: [UInt32] = Array(1 ... 8) + [50, 51, 52, 53]
        do {
            let first = try KVStore.create(at: dir, options: options(), durability: .deferred)
            #expect(first.durability == .deferred)
            let m = try #require(try readMarker(dir), "no marker while a handle defers")
            #expect(m.boot_id == Posix.bootID && m.settings.chunk_tokens == 4 && m.settings.codec == "lossless")
            #expect(try first.store(tokens: a, model: "m", kv: try kvs.cache(a)).written == 3)
            let second = try KVStore.open(at: dir, durability: .deferred)
            #expect(try second.store(tokens: b, model: "m", kv: try kvs.cache(b)).written == 1)
            try first.setDurability(.synced)
            #expect(first.durability == .synced)
            #expect(try readMarker(dir) != nil, "the marker went while another handle still defers")
            // A synced write beside a deferred handle is fine; sync() makes everything durable.
            #expect(
                try first.store(tokens: a + [9, 9, 9, 9], model: "m", kv: try kvs.cache(a + [9, 9, 9, 9])).written == 1)
            try second.sync()
            withExtendedLifetime(first) {}
        }
        #expect(try readMarker(dir) == nil, "the marker outlived every deferred handle")
        let again = try KVStore.open(at: dir, readOnly: true)
        #expect(again.emptiedAtOpen == false)
        #expect(try again.lookup(tokens: a, model: "m").kv == (try kvs.cache(a)))
        #expect(try again.lookup(tokens: b, model: "m").kv == (try kvs.cache(b)))
        #expect(try again.stats().chunks == 5)
        #expect(try again.verify().isEmpty)
        #expect(throws: WStoreError.self) { try again.setDurability(.deferred) }
    }

    @Test func aStoreLeftDeferredByAnotherBootIsEmptiedByAWritableOpenAndRefusedReadOnly() throws {
        let tmp = TemporaryDirectory("torn")
        let dir = tmp.path + "/kv"
        var o = options()
        o.budgetBytes = 1 << 20
        o.codec = .int8
        let a: [UInt32] = Array(1 ... 12)
        do {
            let s = try KVStore.create(at: dir, options: o)
            try s.store(tokens: a, model: "m", kv: try kvs.cache(a))
        }
        try leaveMarker(dir, boot: "00000000-0000-0000-0000-000000000000", options: o)
        let refused = #expect(throws: WStoreError.self) { try KVStore.open(at: dir, readOnly: true) }
        #expect("\(refused.map { "\($0)" } ?? "")".contains("deferred commits"))
        let reopened = try KVStore.open(at: dir)
        #expect(reopened.emptiedAtOpen)
        #expect(try reopened.stats().chunks == 0)
        #expect(reopened.options.chunkTokens == 4 && reopened.options.codec == .int8)
        #expect(reopened.options.budgetBytes == 1 << 20)
        #expect(try readMarker(dir) == nil)
        #expect(try reopened.store(tokens: a, model: "m", kv: try kvs.cache(a)).written == 3)
        #expect(try reopened.lookup(tokens: a, model: "m").chunks == 3)
        // Emptied once: the next open finds nothing to do.
        #expect(try KVStore.open(at: dir, readOnly: true).emptiedAtOpen == false)
    }

    @Test func aMarkerOfThisBootThatNoProcessHoldsIsSettledByAWritableOpen() throws {
        let tmp = TemporaryDirectory("abandoned")
        let dir = tmp.path + "/kv"
        let a: [UInt32] = Array(1 ... 8)
        do { try KVStore.create(at: dir, options: options()).store(tokens: a, model: "m", kv: try kvs.cache(a)) }
        let boot = try #require(Posix.bootID, "this system names no boot id")
        try leaveMarker(dir, boot: boot, options: options())
        // A read-only open reads the store as it is and leaves the marker.
        #expect(try KVStore.open(at: dir, readOnly: true).lookup(tokens: a, model: "m").chunks == 2)
        #expect(try readMarker(dir) != nil)
        let writer = try KVStore.open(at: dir)
        #expect(writer.emptiedAtOpen == false)
        #expect(try readMarker(dir) == nil)
        #expect(try writer.lookup(tokens: a, model: "m").kv == (try kvs.cache(a)))
    }

    @Test func aMarkerThatIsNotOneIsAnErrorAndCreateClearsALeftoverOne() throws {
        let tmp = TemporaryDirectory("badmarker")
        let dir = tmp.path + "/kv"
        do { _ = try KVStore.create(at: dir, options: options()) }
        try Data("{\"format\":\"something else\"}".utf8).write(to: URL(fileURLWithPath: marker(dir)))
        #expect(throws: WStoreError.self) { try KVStore.open(at: dir) }
        // A new store in a directory that holds only an old marker starts clean.
        let fresh = tmp.path + "/fresh"
        try FileManager.default.createDirectory(atPath: fresh, withIntermediateDirectories: true)
        try leaveMarker(fresh, boot: "another-boot", options: options())
        let s = try KVStore.create(at: fresh, options: options())
        #expect(try readMarker(fresh) == nil && s.emptiedAtOpen == false)
        #expect(try KVStore.open(at: fresh, readOnly: true).stats().chunks == 0)
    }
}
