import Foundation
@testable import WeightStore

/// A fresh temporary directory, removed when the value is released.
final class TempDir {
    let path: String
    init() {
        path = FileManager.default.temporaryDirectory
            .appendingPathComponent("wstore-test-\(UUID().uuidString)").path
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
    func sub(_ name: String) -> String { path + "/" + name }
}

/// Deterministic pseudo-random bytes.
func randomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var s = seed &+ 0x9E37_79B9_7F4A_7C15
    var out = [UInt8](repeating: 0, count: count)
    for i in 0 ..< count {
        s = s &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        out[i] = UInt8(truncatingIfNeeded: s >> 33)
    }
    return out
}

/// bf16 values that look like weights (normal, std 0.02), as little-endian bytes.
func weightLikeBF16(_ count: Int, seed: UInt64) -> [UInt8] {
    var state = seed | 1
    func uniform() -> Float {
        state ^= state << 13; state ^= state >> 7; state ^= state << 17
        return Float(state >> 40) / Float(1 << 24) + 1e-7
    }
    var out = [UInt8](repeating: 0, count: count * 2)
    for i in 0 ..< count {
        let v = (-2 * log(uniform())).squareRoot() * cos(2 * .pi * uniform()) * 0.02
        let b = UInt16(truncatingIfNeeded: v.bitPattern >> 16)
        out[2 * i] = UInt8(truncatingIfNeeded: b)
        out[2 * i + 1] = UInt8(truncatingIfNeeded: b >> 8)
    }
    return out
}

/// Bytes for `count` elements of `dtype` that compress somewhat (a mix of runs and noise).
func sampleBytes(_ dtype: DType, elements: Int, seed: UInt64) -> [UInt8] {
    switch dtype {
    case .bf16: return weightLikeBF16(elements, seed: seed)
    default:
        let size = dtype.byteCount(elements: elements) ?? elements
        var b = randomBytes(size, seed: seed)
        for i in stride(from: 0, to: size, by: 3) { b[i] = 0 }  // some redundancy
        return b
    }
}
