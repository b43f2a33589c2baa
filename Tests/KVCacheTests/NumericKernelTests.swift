import Foundation
import Testing
import WStoreCore
import WStoreKernels
import WStoreTestSupport

@testable import KVCache
@testable import WStoreCore

/// The score kernels against plain double-precision loops, on both SIMD paths.
@Suite(.serialized) struct NumericKernelTests {
    @Test(arguments: [false, true])
    func panelDotsMatchPlainLoop(noAVX512: Bool) {
        if noAVX512 { setenv("WSTORE_NO_AVX512", "1", 1) } else { unsetenv("WSTORE_NO_AVX512") }
        defer { unsetenv("WSTORE_NO_AVX512") }
        var rng = SplitMix64(seed: 17)
        for (m, n, d) in [(13, 37, 24), (6, 16, 128), (1, 1, 8), (7, 49, 16)] {
            let q = rng.normals(m * d), k = rng.normals(n * d)
            var panels = [Float](repeating: .nan, count: (n + 15) / 16 * 16 * d)
            var out = [Float](repeating: .nan, count: m * (n + 3))
            k.withUnsafeBufferPointer { kp in
                panels.withUnsafeMutableBufferPointer {
                    NumericKernels.packPanels(kp.baseAddress!, n: n, d: d, into: $0.baseAddress!)
                }
            }
            q.withUnsafeBufferPointer { qp in
                panels.withUnsafeBufferPointer { pp in
                    out.withUnsafeMutableBufferPointer {
                        NumericKernels.panelDots(
                            qp.baseAddress!, m: m, pp.baseAddress!, n: n, d: d, scale: 0.5, into: $0.baseAddress!,
                            ldo: n + 3)
                    }
                }
            }
            for i in 0 ..< m {
                for j in 0 ..< n {
                    var s = 0.0
                    for t in 0 ..< d { s += Double(q[i * d + t]) * Double(k[j * d + t]) }
                    #expect(
                        abs(Double(out[i * (n + 3) + j]) - 0.5 * s) <= 1e-4 * Double(d),
                        "m \(m) n \(n) d \(d) at \(i),\(j)")
                }
                for j in n ..< n + 3 { #expect(out[i * (n + 3) + j].isNaN, "wrote past column \(n)") }
            }
        }
    }

    @Test func expMaxAndHalfConversions() {
        var rng = SplitMix64(seed: 5)
        var x = rng.normals(1003, scale: 20) + [-200, 0, 80]
        let original = x
        let mx = x.withUnsafeBufferPointer { NumericKernels.max($0.baseAddress!, count: $0.count) }
        #expect(mx == original.max()!)
        let sum = x.withUnsafeMutableBufferPointer {
            NumericKernels.expShiftSum($0.baseAddress!, count: $0.count, shift: mx)
        }
        var ref = 0.0
        for (i, v) in original.enumerated() {
            let e = exp(Double(v) - Double(mx))
            ref += e
            // ~1 ulp of exp, plus the f32 rounding of v − max (relative error |v − max|·2^-24);
            // results that would be subnormal (< 2^-126) come out as 0.
            let bound = (2e-6 + abs(Double(v) - Double(mx)) * 1.2e-7) * e + 1.18e-38
            #expect(abs(Double(x[i]) - e) <= bound, "exp at \(i): \(x[i]) vs \(e)")
        }
        #expect(abs(sum - ref) <= 1e-5 * ref)
        let floats: [Float] = rng.normals(999) + [65504, 1e-7, -3e-5, 0, -0.0, .infinity, 70000, 6e-8]
        var halves = [UInt16](repeating: 0, count: floats.count)
        floats.withUnsafeBufferPointer { f in
            halves.withUnsafeMutableBufferPointer {
                NumericKernels.floatToHalf(f.baseAddress!, $0.baseAddress!, count: f.count)
            }
        }
        var back = [Float](repeating: 0, count: floats.count)
        halves.withUnsafeBufferPointer { h in
            back.withUnsafeMutableBufferPointer {
                NumericKernels.halfToFloat(h.baseAddress!, $0.baseAddress!, count: h.count)
            }
        }
        for (i, f) in floats.enumerated() {
            #expect(halves[i] == Float16(f).bitPattern, "f32→f16 of \(f)")
            #expect(back[i] == Float(Float16(f)), "f16→f32 of \(f)")
        }
    }
}
