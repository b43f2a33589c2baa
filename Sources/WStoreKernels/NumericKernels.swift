import CKernels

/// Vectorized numeric kernels for the KV cache: attention scores, exp, float conversion.
/// Each runs an AVX2/FMA/F16C path when the CPU has one and a portable path otherwise.
package enum NumericKernels {
    /// Whether the AVX2/FMA paths are in use on this CPU.
    package static var usesAVX2: Bool { wsk_has_avx2() != 0 }

    /// Whether the AVX-512 score kernel is in use (`WSTORE_NO_AVX512=1` turns it off).
    package static var usesAVX512: Bool { wsk_has_avx512() != 0 }

    /// The widest score-kernel path in use: `AVX-512`, `AVX2` or `portable`.
    package static var scorePath: String { usesAVX512 ? "AVX-512" : usesAVX2 ? "AVX2" : "portable" }

    /// Packs `n` rows of `d` floats into panels of 16 rows, transposed (`[d][16]` each, zero-padded):
    /// the layout ``panelDots(_:m:_:n:d:scale:into:ldo:)`` reads. `panels` holds `ceil(n/16)·16·d` floats.
    /// The corresponding C function is `wsk_pack_panels`.
    package static func packPanels(_ k: UnsafePointer<Float>, n: Int, d: Int, into panels: UnsafeMutablePointer<Float>)
    {
        wsk_pack_panels(k, n, d, panels)
    }

    /// `out[i * ldo + j] = scale · (q[i] · key j)` with the keys packed by ``packPanels(_:n:d:into:)``.
    /// The corresponding C function is `wsk_panel_dots`.
    @inline(__always)
    package static func panelDots(
        _ q: UnsafePointer<Float>, m: Int, _ panels: UnsafePointer<Float>, n: Int, d: Int,
        scale: Float, into out: UnsafeMutablePointer<Float>, ldo: Int
    ) {
        wsk_panel_dots(q, m, panels, n, d, scale, out, ldo)
    }

    /// Replaces `x[i]` by `exp(x[i] − shift)` and returns their sum. The corresponding C function is `wsk_exp_shift_sum`.
    @inline(__always)
    package static func expShiftSum(_ x: UnsafeMutablePointer<Float>, count: Int, shift: Float) -> Double {
        wsk_exp_shift_sum(x, count, shift)
    }

    /// The largest of `count > 0` floats. The corresponding C function is `wsk_max`.
    @inline(__always)
    package static func max(_ x: UnsafePointer<Float>, count: Int) -> Float { wsk_max(x, count) }

    /// Quantization codes `clamp(round_half_even((x − m)·inv), 0, levels)`, with `m` and `inv` per
    /// element (`perElement`) or one pair for all. The corresponding C function is `wsk_quantize`.
    package static func quantize(
        _ x: UnsafePointer<Float>, count: Int, min m: UnsafePointer<Float>, inverseScale inv: UnsafePointer<Float>,
        perElement: Bool, levels: Float, into out: UnsafeMutablePointer<UInt8>
    ) {
        wsk_quantize(x, count, m, inv, perElement ? 1 : 0, levels, out)
    }

    /// `m + code·s`, the inverse of ``quantize(_:count:min:inverseScale:perElement:levels:into:)``.
    /// The corresponding C function is `wsk_dequantize`.
    package static func dequantize(
        _ codes: UnsafePointer<UInt8>, count: Int, min m: UnsafePointer<Float>, scale s: UnsafePointer<Float>,
        perElement: Bool, into out: UnsafeMutablePointer<Float>
    ) {
        wsk_dequantize(codes, count, m, s, perElement ? 1 : 0, out)
    }

    /// Element-wise running minimum and maximum. The corresponding C function is `wsk_minmax_update`.
    package static func minMaxUpdate(
        _ x: UnsafePointer<Float>, count: Int, lo: UnsafeMutablePointer<Float>, hi: UnsafeMutablePointer<Float>
    ) {
        wsk_minmax_update(x, count, lo, hi)
    }

    /// The smallest and largest of `count > 0` floats. The corresponding C function is `wsk_minmax`.
    package static func minMax(_ x: UnsafePointer<Float>, count: Int) -> (Float, Float) {
        var lo: Float = 0, hi: Float = 0
        wsk_minmax(x, count, &lo, &hi)
        return (lo, hi)
    }

    /// IEEE half bit patterns to floats. The corresponding C function is `wsk_f16_to_f32`.
    package static func halfToFloat(_ src: UnsafePointer<UInt16>, _ dst: UnsafeMutablePointer<Float>, count: Int) {
        wsk_f16_to_f32(src, dst, count)
    }

    /// Floats to IEEE half bit patterns, rounding to nearest even. The corresponding C function is `wsk_f32_to_f16`.
    package static func floatToHalf(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<UInt16>, count: Int) {
        wsk_f32_to_f16(src, dst, count)
    }
}
