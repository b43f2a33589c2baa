import Foundation
import Testing
import WStoreTestSupport
import WeightStore

/// Expert precision through the C ABI: Clients/precision_check.c, compiled against
/// include/wstore.h and linked with libwstore-c.so, acquires copies at each precision of
/// a store written here, decodes the blocks from wstore_part_blocks alone, and checks the
/// misuse error codes.
@Suite struct PrecisionABITests {
    @Test func cProgramServesEveryPrecision() throws {
        let dir = TemporaryDirectory()
        _ = try makeVariantExpertStore(at: dir.sub("store"), layers: 1, experts: 2)
        try CABITests.runCClient(
            "precision_check", in: dir, libraries: ["-lm"], arguments: [dir.sub("store")], minimumChecks: 60)
    }
}
