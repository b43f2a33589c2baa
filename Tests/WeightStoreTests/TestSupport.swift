import Foundation
import WStoreTestSupport

@testable import WeightStore

/// bf16 values that look like weights (normal, std 0.02), as little-endian bytes.
func weightLikeBF16(_ count: Int, seed: UInt64) -> [UInt8] {
    var state = seed | 1
    func uniform() -> Float {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
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
