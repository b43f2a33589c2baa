import Foundation
import Testing
import WStoreTestSupport
import WeightStore

@testable import WStoreCLI

@Suite struct VerifyCommandTests {
    @Test func verifyNamesTheCorruptTensorAndFails() throws {
        let dir = TemporaryDirectory()
        let target = dir.sub("s.wstore")
        try wstore("pack", fixtures + "/sharded", "-o", target, "--model", "m", "--codec", "raw", "--quiet")
        try wstore("verify", target)
        // Flip one byte of one tensor's payload inside data.mdb.
        let victim = "model.layers.2.self_attn.q_proj.weight"
        let bytes = try contents(of: target, model: "m")[victim]!.1
        var db = try Data(contentsOf: URL(fileURLWithPath: target + "/data.mdb"))
        let at = try #require(db.firstRange(of: Data(bytes)))
        db[at.lowerBound + 100] ^= 0xFF
        try db.write(to: URL(fileURLWithPath: target + "/data.mdb"))
        #expect { try wstore("verify", target) } throws: { WStoreCommand.exitCode(for: $0).rawValue == 1 }
        let r = try WeightStore.open(at: target).verify()
        #expect(r.failures.map(\.name) == [victim])
        #expect(r.tensorsChecked == 4)
    }
}
