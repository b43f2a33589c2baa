import Foundation
import Testing
import WStoreFuzzing

/// Every input fuzzing found a crash with (Inputs/<target>/), replayed through the same
/// entry point: each must now be rejected with a one-line error or read correctly,
/// and the seeds the corpora start from must be accepted.
@Suite struct FuzzRegressionTests {
    static let inputs = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Inputs")
        .path

    /// The kept inputs of `target`, by file name.
    static func kept(_ target: FuzzTarget) -> [(name: String, bytes: [UInt8])] {
        let dir = inputs + "/" + target.rawValue
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        return names.sorted().compactMap { n in
            FileManager.default.contents(atPath: dir + "/" + n).map { (n, [UInt8]($0)) }
        }
    }

    @Test(arguments: FuzzTarget.allCases)
    func seedsAreAccepted(_ target: FuzzTarget) throws {
        for seed in try target.seeds() {
            let error = seed.withUnsafeBytes { target.run($0) }
            #expect(error == nil, "\(target.rawValue) seed rejected: \(String(describing: error))")
        }
    }

    @Test(arguments: FuzzTarget.allCases)
    func keptInputsDoNotCrash(_ target: FuzzTarget) throws {
        for input in Self.kept(target) {
            // A crash here fails the whole test process, which is the regression this guards.
            let error = input.bytes.withUnsafeBytes { target.run($0) }
            if let error { #expect(!"\(error)".contains("\n"), "\(input.name)") }
        }
    }
}
