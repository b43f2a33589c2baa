import Foundation
import Testing
import WStoreTestSupport
import WeightStore

@testable import WStoreCLI

@Suite struct SampleCommandTests {
    @Test func sampleWritesAnIndexedMoEModel() throws {
        let tmp = TemporaryDirectory("cli")
        let dir = tmp.sub("sample")
        var cmd = try #require(
            try WStoreCommand.parseAsRoot(
                ["sample", dir, "--layers", "2", "--experts", "4", "--hidden", "32", "--ffn", "64", "--quiet"])
                as? Sample)
        try cmd.run()
        let store = try WeightStore.open(at: dir)
        #expect(try store.models() == ["sample-moe"])
        let tensors = try store.tensors(model: "sample-moe")
        #expect(tensors.count == 2 * (4 + 1 + 4 * 3))
        #expect(tensors.allSatisfy { $0.dtype == .bf16 })
        let experts = try store.experts(model: "sample-moe")
        #expect(experts.count == 8)
        #expect(experts.allSatisfy { Set($0.parts.keys) == ["gate", "up", "down"] })
        let info = try #require(try store.modelInfo("sample-moe"))
        #expect(info.layers == 2 && info.expertsPerLayer == 4 && info.topK == 2)
    }

    @Test func sampleRefusesBadShapes() {
        #expect(
            usageError(["sample", "/tmp/x", "--top-k", "9", "--experts", "4"])
                == "layers, experts, hidden, ffn and top-k must be positive, and top-k ≤ experts")
    }
}
