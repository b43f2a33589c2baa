import Foundation
import Testing
import WStoreCore
import WStoreFormats
import WStoreTestSupport
import WeightStore

/// Damaged files never crash a reader: each one either reads (with every tensor's bytes
/// inside the file) or is an ImportError naming the file.
@Suite struct ReaderFuzzTests {
    /// Copies of `source` with one damage each: a truncation, a random byte, or a
    /// 64-bit field set to an extreme value, all inside the first `region` bytes.
    static func damaged(_ source: String, region: Int, count: Int, seed: UInt64) throws -> [[UInt8]] {
        let good = [UInt8](try Data(contentsOf: URL(fileURLWithPath: source)))
        var rng = SplitMix64(seed: seed)
        var out: [[UInt8]] = []
        for i in 0 ..< count {
            var b = good
            let at = Int(rng.next() % UInt64(min(region, b.count)))
            switch i % 4 {
            case 0: b.removeLast(b.count - at)
            case 1: b[at] ^= UInt8(truncatingIfNeeded: rng.next() | 1)
            case 2:
                let v: UInt64 = [UInt64.max, UInt64(Int.max), 1 << 32, 0][Int(rng.next() % 4)]
                for k in 0 ..< 8 where at + k < b.count { b[at + k] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(k))) }
            default: b[at] = [0x00, 0x22, 0x5B, 0x7B, 0x7D, 0x2C, 0xFF][Int(rng.next() % 7)]
            }
            out.append(b)
        }
        return out
    }

    @Test func damagedSafetensorsNeverCrash() throws {
        let dir = TemporaryDirectory()
        let path = dir.sub("f.safetensors")
        var rejected = 0
        for b in try Self.damaged(fixtures + "/bad/good.safetensors", region: 160, count: 400, seed: 1) {
            try Data(b).write(to: URL(fileURLWithPath: path))
            do {
                let f = try SafetensorsFile(path: path)
                var total = 0
                for t in f.tensors { total += f.withBytes(of: t) { $0.count } }
                #expect(f.dataOffset + total == f.fileSize)
            } catch {
                #expect(error.file == path && !error.description.contains("\n"))
                rejected += 1
            }
        }
        #expect(rejected > 200)
    }

    @Test func damagedGGUFNeverCrashes() throws {
        let dir = TemporaryDirectory()
        let path = dir.sub("f.gguf")
        let good = try GGUFFile(path: fixtures + "/bad/good.gguf")
        let infoEnd = good.tensors.first!.byteRange.lowerBound
        var rejected = 0
        for b in try Self.damaged(fixtures + "/bad/good.gguf", region: infoEnd, count: 400, seed: 2) {
            try Data(b).write(to: URL(fileURLWithPath: path))
            do {
                let f = try GGUFFile(path: path)
                for t in f.tensors { #expect(t.byteRange.upperBound <= b.count) }
            } catch {
                #expect(error.file == path && !error.description.contains("\n"))
                rejected += 1
            }
        }
        #expect(rejected > 100)
    }
}
