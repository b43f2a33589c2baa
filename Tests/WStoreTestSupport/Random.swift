import Foundation
import WStoreCore

extension SplitMix64 {
    /// A uniform float in [0, 1).
    package mutating func uniform() -> Float { Float(next() >> 40) / Float(1 << 24) }

    /// A roughly standard normal float (Box-Muller).
    package mutating func normal() -> Float {
        let u1 = max(uniform(), 1e-7), u2 = uniform()
        return (-2 * log(u1)).squareRoot() * cos(2 * .pi * u2)
    }

    /// `n` normal floats times `scale`.
    package mutating func normals(_ n: Int, scale: Float = 1) -> [Float] { (0 ..< n).map { _ in normal() * scale } }
}

/// Deterministic pseudo-random bytes (SplitMix64 seeded with `seed`).
package func randomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var rng = SplitMix64(seed: seed)
    var out = [UInt8](repeating: 0, count: count)
    for i in 0 ..< count { out[i] = UInt8(truncatingIfNeeded: rng.next() >> 33) }
    return out
}
