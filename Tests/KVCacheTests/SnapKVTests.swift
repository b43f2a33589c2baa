import Foundation
import Testing
import WStoreCore
import WStoreTestSupport

@testable import KVCache

/// SnapKV against the NumPy port of the reference (Fixtures/snapkv_reference.py).
@Suite struct SnapKVTests {
    /// The reference's cases, written once per test run.
    static let fixturesDirectory = TemporaryDirectory("snapkv-ref")
    static let fixtures: String = {
        let dir = fixturesDirectory.path
        _ = try! runPython([repositoryRoot + "/Tests/KVCacheTests/Fixtures/snapkv_reference.py", dir])
        return dir
    }()

    static let cases = ["random_f32", "peaks_f16", "ties_f32", "edges_bf16", "short_f32", "exact_f32"]

    @Test(arguments: cases)
    func matchesReference(_ name: String) throws {
        let path = SnapKVTests.fixtures + "/\(name).safetensors"
        let file = try KVSafetensors.read(path: path)
        let meta = try safetensorsMetadata(path)
        var queries = try file["queries"]!.kvTensor(name: "queries")
        var keys = try file["keys"]!.kvTensor(name: "keys")
        if name.hasSuffix("bf16") {  // the values are bf16-exact; hand them over as bf16
            queries = try KVTensor(
                floats: queries.floats(), dtype: .bf16, heads: queries.heads, tokens: queries.tokens,
                headDim: queries.headDim)
            keys = try KVTensor(
                floats: keys.floats(), dtype: .bf16, heads: keys.heads, tokens: keys.tokens, headDim: keys.headDim)
            #expect(keys.floats() == (try file["keys"]!.kvTensor(name: "keys")).floats())
        }
        var exactHeads = 0, totalHeads = 0
        defer { print("SnapKV \(name): \(exactHeads) of \(totalHeads) head selections identical to the reference") }
        for pooling in SnapKV.Pooling.allCases {
            for heads in SnapKV.Heads.allCases {
                var config = SnapKV.Config()
                config.window = Int(meta["window"]!)!
                config.capacity = Int(meta["capacity"]!)!
                config.kernel = Int(meta["kernel"]!)!
                config.pooling = pooling
                config.heads = heads
                let label = "\(name) \(pooling) \(heads)"
                let expected = try KVSafetensors.positions(file["expected.\(pooling).\(heads).kept"]!, name: label)
                let got = try SnapKV.select(queries: queries, keys: keys, config: config, threads: 2)
                #expect(got.count == expected.count, "\(label): head count")
                totalHeads += expected.count
                let refScores = file["expected.\(pooling).\(heads).scores"].map(float64Rows)
                for h in 0 ..< min(got.count, expected.count) {
                    #expect(got[h] == got[h].sorted(), "\(label) head \(h): not ascending")
                    #expect(got[h].count == expected[h].count, "\(label) head \(h): kept count")
                    if got[h] == expected[h] {
                        exactHeads += 1
                        continue
                    }
                    // Only a near-tie at the cut may differ from the reference (f32 here, f64 there).
                    let s = try #require(refScores, "\(label): selections differ with nothing evicted")[h]
                    let mine = Set(got[h]), theirs = Set(expected[h])
                    let cut = expected[h].filter { Int($0) < s.count }.map { s[Int($0)] }.min()!
                    for p in mine.symmetricDifference(theirs) {
                        #expect(
                            abs(s[Int(p)] - cut) <= 1e-5 * max(abs(cut), 1e-3),
                            "\(label) head \(h): position \(p) (score \(s[Int(p)])) differs, cut at \(cut)")
                    }
                }
                if name.hasPrefix("ties") || name.hasPrefix("short") || name.hasPrefix("exact") {
                    #expect(got == expected, "\(label): exact ties must match exactly")
                }
                if let refScores {  // the scores themselves agree closely
                    let mine = try SnapKV.pooledScores(queries: queries, keys: keys, config: config)
                    for h in 0 ..< refScores.count {
                        for i in 0 ..< refScores[h].count {
                            #expect(
                                abs(Double(mine[h][i]) - refScores[h][i]) <= 1e-4 * max(refScores[h][i], 1e-2),
                                "\(label) head \(h) position \(i)")
                        }
                    }
                }
            }
        }
    }

    @Test func structuredPoolingAtEdges() {
        let x: [Float] = [5, 0, 0, 0, 1, 0, 0, 0, 0, 7]
        #expect(SnapKV.pool(x, kernel: 3, pooling: .max) == [5, 5, 0, 1, 1, 1, 0, 0, 7, 7])
        let avg = SnapKV.pool(x, kernel: 3, pooling: .avg)
        #expect(avg[0] == 5 / 3 && avg[9] == 7 / 3 && avg[4] == 1 / 3)
        #expect(SnapKV.topPositions([1, 3, 3, 2, 3], count: 2) == [1, 2])
        #expect(SnapKV.topPositions([1, 3, 3, 2, 3], count: 4) == [1, 2, 3, 4])
    }

    @Test func rejectsBadConfig() throws {
        let q = try KVTensor(
            floats: [Float](repeating: 0, count: 2 * 4 * 8), dtype: .f32, heads: 2, tokens: 4, headDim: 8)
        let k = try KVTensor(
            floats: [Float](repeating: 0, count: 3 * 100 * 8), dtype: .f32, heads: 3, tokens: 100, headDim: 8)
        var c = SnapKV.Config()
        c.kernel = 4
        #expect(throws: WStoreError.self) { try SnapKV.select(queries: q, keys: k, config: c) }
        c = SnapKV.Config()
        c.window = 4
        c.capacity = 16
        #expect(throws: WStoreError.self) { try SnapKV.select(queries: q, keys: k, config: c) }  // 2 q heads, 3 kv heads
    }
}

func float64Rows(_ t: KVSafetensors.Tensor) -> [[Double]] {
    precondition(t.dtype == "F64" && t.shape.count == 2)
    return t.bytes.withUnsafeBytes { raw in
        (0 ..< t.shape[0]).map { h in
            (0 ..< t.shape[1]).map { i in raw.loadUnaligned(fromByteOffset: 8 * (h * t.shape[1] + i), as: Double.self) }
        }
    }
}

/// The `__metadata__` of a safetensors file.
func safetensorsMetadata(_ path: String) throws -> [String: String] {
    let data = try Data(contentsOf: URL(fileURLWithPath: path))
    let n = data.prefix(8).withUnsafeBytes { Int($0.loadUnaligned(as: UInt64.self)) }
    let json = try JSONSerialization.jsonObject(with: data.subdata(in: 8 ..< 8 + n)) as! [String: Any]
    return json["__metadata__"] as? [String: String] ?? [:]
}
