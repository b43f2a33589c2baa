import Foundation
import Testing
@testable import KVCache
@testable import WStoreCLI
import WStoreCore

/// KV inputs made to hurt: refused with one line, never a trap.
@Suite struct HostileKVInputTests {
    /// An index entry (format-spec/KV.md §2) with the given stored and raw sizes.
    static func indexEntry(stored: UInt64, raw: UInt64) -> [UInt8] {
        var b: [UInt8] = []
        for v: UInt64 in [0, 1, stored, raw] { withUnsafeBytes(of: v.littleEndian) { b += $0 } }
        for v: UInt32 in [0, 0, 0] { withUnsafeBytes(of: v.littleEndian) { b += $0 } }
        return b + Array("m".utf8)
    }

    @Test func indexEntryWithAnAbsurdSizeIsCorruptNotATrap() throws {
        for (stored, raw) in [(UInt64(1) << 63, UInt64(10)), (UInt64.max, 10), (10, UInt64(1) << 63), (UInt64(1) << 49, 10)] {
            let b = Self.indexEntry(stored: stored, raw: raw)
            #expect(throws: WStoreError.self) { try b.withUnsafeBytes { try KVStore.Node.parse($0) } }
        }
        let ok = try Self.indexEntry(stored: 4096, raw: 8192).withUnsafeBytes { try KVStore.Node.parse($0) }
        #expect(ok.storedBytes == 4096 && ok.rawBytes == 8192 && ok.model == "m")
    }

    /// A real chunk whose header then claims `tokens` × `heads` × `headDim`, checksum made to match.
    static func chunk(claiming tokens: UInt32, heads: UInt32, headDim: UInt32) throws -> [UInt8] {
        let t = try KVTensor(floats: [Float](repeating: 0.5, count: 2 * 4 * 8), dtype: .f16, heads: 2, tokens: 4, headDim: 8)
        var c = try KVChunk.encode(try KVCacheData(layers: [KVLayer(keys: t, values: t)]), codec: .lossless, kivi: KIVIOptions())
        c.withUnsafeMutableBytes { b in
            b.storeBytes(of: tokens.littleEndian, toByteOffset: 12, as: UInt32.self)
            b.storeBytes(of: heads.littleEndian, toByteOffset: 16, as: UInt32.self)
            b.storeBytes(of: headDim.littleEndian, toByteOffset: 20, as: UInt32.self)
            #expect(KVChunk.resealHeader(b))
        }
        return c
    }

    @Test func chunkHeaderWithAnAbsurdShapeIsCorruptNotATrap() throws {
        let good = try Self.chunk(claiming: 4, heads: 2, headDim: 8)
        #expect(try good.withUnsafeBytes { try KVChunk.decode($0, name: "c") }.tokens == 4)
        for shape: (UInt32, UInt32, UInt32) in [(.max, .max, .max), (1 << 20, 1 << 20, 1 << 20), (8, 2, 8)] {
            let c = try Self.chunk(claiming: shape.0, heads: shape.1, headDim: shape.2)
            #expect(throws: WStoreError.self) { try c.withUnsafeBytes { try KVChunk.decode($0, name: "c") } }
        }
    }

    @Test func gatherRefusesPositionsItCannotHonour() throws {
        let t = try KVTensor(floats: [Float](repeating: 1, count: 2 * 4 * 2), dtype: .f32, heads: 2, tokens: 4, headDim: 2)
        #expect(try t.gather(positions: [[0, 3], [1, 2]]).shape == [2, 2, 2])
        for bad: [[Int32]] in [[], [[0]], [[0, 1], [2]], [[0, 4], [1, 2]], [[-1, 0], [1, 2]]] {
            #expect(throws: WStoreError.self) { try t.gather(positions: bad) }
        }
        #expect(throws: WStoreError.self) { try KVTensor(dtype: .f32, heads: Int.max, tokens: 2, headDim: 2, bytes: []) }
    }

    @Test func topPositionsAlwaysKeepsTheCountAskedFor() {
        let s: [Float] = [.nan, 1, .nan, .infinity, -.infinity, 0.5, .nan]
        for count in 1 ..< s.count {
            let kept = SnapKV.topPositions(s, count: count)
            #expect(kept.count == count && kept == kept.sorted())
        }
    }

    /// A KV file written by numpy and safetensors; `edit` is Python run on the dict `t` before saving.
    static func kvFile(_ path: String, edit: String) throws {
        _ = try runPython(["-c", """
            import numpy as np
            from safetensors.numpy import save_file
            rng = np.random.default_rng(3)
            t = {}
            for l in range(2):
                t[f"layers.{l}.keys"] = rng.normal(size=(2, 96, 16)).astype(np.float16)
                t[f"layers.{l}.values"] = rng.normal(size=(2, 96, 16)).astype(np.float16)
                t[f"layers.{l}.queries"] = rng.normal(size=(4, 8, 16)).astype(np.float16)
            \(edit)
            save_file(t, "\(path)")
            """])
    }

    func compress(_ input: String, _ extra: [String] = []) throws {
        var cmd = try #require(try WStoreCommand.parseAsRoot(
            ["kv", "compress", "--input", input, "--output", input + ".out"] + extra) as? KVCompress)
        try cmd.run()
    }

    @Test(arguments: [
        ("t['layers.1.queries'][2, 5, 3] = np.nan", "layer 1: SnapKV cannot rank positions: the queries hold NaN or infinite values"),
        ("t['layers.0.keys'][1, 40, 0] = np.inf", "layer 0: SnapKV cannot rank positions: the keys hold NaN"),
        ("t['layers.0.keys'][0, 7, 2] = -np.inf", "layer 0: SnapKV cannot rank positions: the keys hold NaN"),
        ("t['layers.1.keys'][0, 90, 2] = np.nan", "layer 1: SnapKV cannot rank positions: the keys hold NaN"),
        ("t['layers.00.keys'] = t.pop('layers.0.keys')", #"tensor "layers.00.keys": the layer must be a number without leading zeros"#),
        ("t['layers.1.keys'] = t['layers.1.keys'][:, :50].copy()", "layer 1: keys [2, 50, 16]"),
        ("del t['layers.1.values']", "lacks layers.1.values"),
        ("t['layers.0.queries'] = t['layers.0.queries'].reshape(4, 128)", "layers.0.queries has shape [4, 128]"),
    ])
    func badKVInputIsOneLineNamingTheFileAndExitOne(_ edit: String, _ says: String) throws {
        let dir = temporaryDirectory("kv-hostile")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let input = dir + "/kv.safetensors"
        try Self.kvFile(input, edit: edit)
        do {
            try compress(input, ["--snapkv", "window=8,capacity=32,kernel=3"])
            Issue.record("accepted: \(edit)")
        } catch {
            // An ImportError, not a usage error: ArgumentParser prints it as one line and exits 1.
            #expect(error is ImportError, "\(type(of: error)): \(error)")
            #expect("\(error)".hasPrefix(input + ": ") && "\(error)".contains(says), "\(error)")
            #expect(!"\(error)".contains("\n"))
            #expect(WStoreCommand.exitCode(for: error) == .failure)
        }
        #expect(!FileManager.default.fileExists(atPath: input + ".out"))
        // Without --snapkv, NaN and Inf are values like any other: kept bit for bit by the lossless codec.
        if edit.contains("np.nan") || edit.contains("np.inf") {
            try compress(input)
            #expect(FileManager.default.fileExists(atPath: input + ".out"))
        }
    }
}
