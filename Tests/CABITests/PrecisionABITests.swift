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
        let lib = try #require(
            CABITests.libraryDirectory(),
            "libwstore-c.so not found beside the test binary nor in .build/debug: build with `swift build --build-tests`"
        )
        let exe = dir.sub("precision_check")
        let cc = runProcess(
            CABITests.cc,
            [
                "-std=c11", "-Wall", "-Wextra", "-Werror", "-I", CABITests.root + "/include",
                CABITests.root + "/Tests/CABITests/Clients/precision_check.c", "-L", lib, "-lwstore-c",
                "-Wl,-rpath," + lib, "-lm", "-o", exe,
            ] + sanitizerLinkFlags)
        #expect(cc.status == 0, "cc failed: \(cc.output)")
        guard cc.status == 0 else { return }
        let r = runProcess(exe, [dir.sub("store")], environment: sanitizerEnvironment)
        #expect(r.status == 0, "precision_check failed:\n\(r.output)")
        let summary = r.output.split(separator: "\n").last { $0.hasPrefix("precision_check: ") } ?? ""
        let counted = Int(summary.dropFirst("precision_check: ".count).prefix { $0.isNumber }) ?? 0
        #expect(counted >= 60 && summary.hasSuffix(" checks, 0 failed"), "\(r.output)")
    }
}
