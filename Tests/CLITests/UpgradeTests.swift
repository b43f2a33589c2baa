import Foundation
import Testing
import WeightStore

@testable import WStoreCLI

/// A version-1 store written by wstore before format v2 (`wstore sample v1-store --layers 2
/// --experts 2 --hidden 32 --ffn 64 --model tiny`, then only its data.mdb kept) is read as it
/// was, and `wstore upgrade` rewrites it as version 2 with the same contents.
@Suite struct UpgradeTests {
    static let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures/v1-store/data.mdb").path

    func temp() -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("wstore-upgrade-\(UUID().uuidString)")
            .path
        try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    /// Every tensor's bytes and shape, the expert index and the model info of `store`.
    func contents(_ store: WeightStore) throws -> [String: [UInt8]] {
        var out: [String: [UInt8]] = [:]
        for t in try store.tensors(model: "tiny") {
            out["\(t.name) \(t.dtype) \(t.shape) \(t.codec)"] = try store.readBytes(t.name, model: "tiny")
        }
        for e in try store.experts(model: "tiny") {
            out["expert \(e.layer)/\(e.expert)"] = Array(e.parts.sorted { $0.key < $1.key }.description.utf8)
        }
        out["info"] = Array(
            "\(try store.modelInfo("tiny").map { [$0.layers, $0.expertsPerLayer, $0.topK] } ?? [])".utf8)
        return out
    }

    @Test func aVersionOneStoreReadsAsWrittenAndUpgrades() throws {
        let dir = temp()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir + "/v1", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: Self.fixture, toPath: dir + "/v1/data.mdb")
        // The same model written by this build.
        var sample = try #require(
            try WStoreCommand.parseAsRoot(
                [
                    "sample", dir + "/v2", "--layers", "2", "--experts", "2", "--hidden", "32", "--ffn", "64",
                    "--model", "tiny",
                    "--quiet",
                ]) as? Sample)
        try sample.run()
        let expected = try contents(try WeightStore.open(at: dir + "/v2"))
        #expect(expected.count > 10)
        do {
            let v1 = try WeightStore.open(at: dir + "/v1", readOnly: false)
            #expect(v1.formatVersion == 1)
            #expect(try contents(v1) == expected)
            #expect(try v1.verify().failures.isEmpty)
            #expect(throws: WStoreError.self) { try v1.setModelInfo(ModelInfo(name: "tiny", sources: [])) }
        }
        var upgrade = try #require(try WStoreCommand.parseAsRoot(["upgrade", dir + "/v1", "--quiet"]) as? Upgrade)
        try upgrade.run()
        let upgraded = try WeightStore.open(at: dir + "/v1")
        #expect(upgraded.formatVersion == 2)
        #expect(try contents(upgraded) == expected)
        #expect(try upgraded.verify().failures.isEmpty)
        #expect(try upgraded.tensors(model: "tiny").allSatisfy { $0.frameCount > 0 })
    }
}
