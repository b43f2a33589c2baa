import Foundation
import Testing
import WStoreTestSupport

@testable import KVCache
@testable import WStoreCore

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
        for (stored, raw) in [
            (UInt64(1) << 63, UInt64(10)), (UInt64.max, 10), (10, UInt64(1) << 63), (UInt64(1) << 49, 10),
        ] {
            let b = Self.indexEntry(stored: stored, raw: raw)
            #expect(throws: WStoreError.self) { try b.withUnsafeBytes { try KVStore.Node.parse($0, key: 1) } }
        }
        let ok = try Self.indexEntry(stored: 4096, raw: 8192).withUnsafeBytes { try KVStore.Node.parse($0, key: 1) }
        #expect(ok.storedBytes == 4096 && ok.rawBytes == 8192 && ok.model == "m")
    }

    /// A real chunk whose header then claims `tokens` × `heads` × `headDim`, checksum made to match.
    static func chunk(claiming tokens: UInt32, heads: UInt32, headDim: UInt32) throws -> [UInt8] {
        let t = try KVTensor(
            floats: [Float](repeating: 0.5, count: 2 * 4 * 8), dtype: .f16, heads: 2, tokens: 4, headDim: 8)
        var c = try KVChunk.encode(
            try KVCacheData(layers: [KVLayer(keys: t, values: t)]), key: 5, codec: .lossless, kivi: KIVIOptions())
        c.withUnsafeMutableBytes { b in
            b.storeBytes(of: tokens.littleEndian, toByteOffset: 12, as: UInt32.self)
            b.storeBytes(of: heads.littleEndian, toByteOffset: 16, as: UInt32.self)
            b.storeBytes(of: headDim.littleEndian, toByteOffset: 20, as: UInt32.self)
            #expect(KVChunk.resealHeader(b, key: 5))
        }
        return c
    }

    @Test func chunkHeaderWithAnAbsurdShapeIsCorruptNotATrap() throws {
        let good = try Self.chunk(claiming: 4, heads: 2, headDim: 8)
        #expect(try good.withUnsafeBytes { try KVChunk.decode($0, key: 5, name: "c") }.tokens == 4)
        for shape: (UInt32, UInt32, UInt32) in [(.max, .max, .max), (1 << 20, 1 << 20, 1 << 20), (8, 2, 8)] {
            let c = try Self.chunk(claiming: shape.0, heads: shape.1, headDim: shape.2)
            #expect(throws: WStoreError.self) { try c.withUnsafeBytes { try KVChunk.decode($0, key: 5, name: "c") } }
        }
    }

    @Test func gatherRefusesPositionsItCannotHonour() throws {
        let t = try KVTensor(
            floats: [Float](repeating: 1, count: 2 * 4 * 2), dtype: .f32, heads: 2, tokens: 4, headDim: 2)
        #expect(try t.gather(positions: [[0, 3], [1, 2]]).shape == [2, 2, 2])
        for bad: [[Int32]] in [[], [[0]], [[0, 1], [2]], [[0, 4], [1, 2]], [[-1, 0], [1, 2]]] {
            #expect(throws: WStoreError.self) { try t.gather(positions: bad) }
        }
        #expect(throws: WStoreError.self) {
            try KVTensor(dtype: .f32, heads: Int.max, tokens: 2, headDim: 2, bytes: [])
        }
    }

    @Test func topPositionsAlwaysKeepsTheCountAskedFor() {
        let s: [Float] = [.nan, 1, .nan, .infinity, -.infinity, 0.5, .nan]
        for count in 1 ..< s.count {
            let kept = SnapKV.topPositions(s, count: count)
            #expect(kept.count == count && kept == kept.sorted())
        }
    }
}
