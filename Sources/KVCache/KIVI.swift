import WStoreCore

/// KIVI-style asymmetric quantization (arXiv 2402.02750) of one KV tensor.
///
/// Keys are quantized per channel (a group runs along tokens, for one head and channel),
/// values per token (a group runs along channels, for one head and token). Each group keeps
/// its minimum and scale as f16; an element is `round((x − min) / scale)` in `bits` bits.
/// The newest `residual` tokens stay in the tensor's own dtype. The byte layout is
/// format-spec/KV.md §4.
package enum KIVI {
    /// Which way groups run.
    package enum Axis: UInt8, Sendable {
        /// Keys: one group per head, channel and run of `group` tokens.
        case perChannel = 0
        /// Values: one group per head, token and run of `group` channels.
        case perToken = 1
    }

    /// "KIVI"
    static let magic: UInt32 = 0x4956_494B
    static let headerSize = 32

    /// Quantizes `t` into a blob (not yet zstd-compressed).
    package static func encode(_ t: KVTensor, bits: Int, axis: Axis, options: KIVIOptions) -> [UInt8] {
        precondition([2, 4, 8].contains(bits) && options.group > 0 && options.residual >= 0)
        let h = t.heads, d = t.headDim, n = t.tokens
        let r = min(options.residual, n), q = n - r, g = options.group
        let x = t.floats()
        let groupsPerHead = axis == .perChannel ? ((q + g - 1) / g) * d : q * ((d + g - 1) / g)
        let groups = h * groupsPerHead
        let codesCount = h * q * d
        let codeBytes = (codesCount * bits + 7) / 8
        let residualBytes = h * r * d * t.elementSize
        var out = [UInt8](repeating: 0, count: headerSize + 4 * groups + codeBytes + residualBytes)
        let levels = Float((1 << bits) - 1)
        out.withUnsafeMutableBytes { o in
            func put32(_ v: UInt32, _ at: Int) { o.storeBytes(of: v.littleEndian, toByteOffset: at, as: UInt32.self) }
            put32(magic, 0)
            o[4] = 1
            o[5] = UInt8(bits)
            o[6] = axis.rawValue
            o[7] = t.dtype.code
            put32(UInt32(h), 8); put32(UInt32(n), 12); put32(UInt32(d), 16); put32(UInt32(g), 20); put32(UInt32(r), 24)
            let mins = (o.baseAddress! + headerSize).assumingMemoryBound(to: UInt16.self)
            let scales = mins + groups
            let codes = (o.baseAddress! + headerSize + 4 * groups).assumingMemoryBound(to: UInt8.self)
            var codeIndex = 0, groupIndex = 0
            var minF = [Float](repeating: 0, count: 1), scaleF = [Float](repeating: 0, count: 1)
            // Visits the element offsets of each group in order, quantizing them.
            func quantize(_ offsets: StrideTo<Int>) {
                var lo = Float.infinity, hi = -Float.infinity
                for i in offsets { lo = min(lo, x[i]); hi = max(hi, x[i]) }
                if !lo.isFinite { lo = 0; hi = 0 }
                minF[0] = lo
                NumericKernels.floatToHalf(minF, mins + groupIndex, count: 1)
                var m16: Float = 0
                withUnsafeMutablePointer(to: &m16) { NumericKernels.halfToFloat(mins + groupIndex, $0, count: 1) }
                scaleF[0] = max(hi - m16, 0) / levels
                NumericKernels.floatToHalf(scaleF, scales + groupIndex, count: 1)
                var s16: Float = 0
                withUnsafeMutablePointer(to: &s16) { NumericKernels.halfToFloat(scales + groupIndex, $0, count: 1) }
                let inv: Float = s16 > 0 ? 1 / s16 : 0
                for i in offsets {
                    let v = min(max(((x[i] - m16) * inv).rounded(.toNearestOrEven), 0), levels)
                    let c = UInt8(v)
                    let bit = codeIndex * bits
                    codes[bit >> 3] |= c << UInt8(bit & 7)
                    codeIndex += 1
                }
                groupIndex += 1
            }
            for head in 0 ..< h {
                let base = head * n * d
                switch axis {
                case .perChannel:
                    var t0 = 0
                    while t0 < q {
                        let t1 = min(q, t0 + g)
                        for c in 0 ..< d { quantize(stride(from: base + t0 * d + c, to: base + t1 * d + c, by: d)) }
                        t0 = t1
                    }
                case .perToken:
                    for tok in 0 ..< q {
                        var c0 = 0
                        while c0 < d {
                            let c1 = min(d, c0 + g)
                            quantize(stride(from: base + tok * d + c0, to: base + tok * d + c1, by: 1))
                            c0 = c1
                        }
                    }
                }
            }
            precondition(groupIndex == groups && codeIndex == codesCount)
            // The residual tokens, as they are.
            let res = o.baseAddress! + headerSize + 4 * groups + codeBytes
            let row = d * t.elementSize
            t.bytes.withUnsafeBytes { src in
                for head in 0 ..< h where r > 0 {
                    (res + head * r * row).copyMemory(from: src.baseAddress! + (head * n + q) * row, byteCount: r * row)
                }
            }
        }
        return out
    }

    /// Rebuilds the tensor from a blob written by ``encode(_:bits:axis:options:)``.
    /// - Throws: ``WStoreError/corruptRecord(name:reason:)`` when the blob is inconsistent.
    package static func decode(_ blob: UnsafeRawBufferPointer, name: String) throws -> KVTensor {
        func corrupt(_ why: String) -> WStoreError { .corruptRecord(name: name, reason: why) }
        guard blob.count >= headerSize else { throw corrupt("quantized tensor shorter than its header") }
        func u32(_ at: Int) -> Int { Int(UInt32(littleEndian: blob.loadUnaligned(fromByteOffset: at, as: UInt32.self))) }
        guard UInt32(u32(0)) == magic, blob[4] == 1 else { throw corrupt("bad quantized-tensor magic or version") }
        let bits = Int(blob[5])
        guard [2, 4, 8].contains(bits), let axis = Axis(rawValue: blob[6]),
              let dtype = DType(code: blob[7], ggmlType: 0), KVTensor.supportedDTypes.contains(dtype) else {
            throw corrupt("bad quantized-tensor bits, axis or dtype")
        }
        let h = u32(8), n = u32(12), d = u32(16), g = u32(20), r = u32(24)
        guard g > 0, r <= n, h <= 1 << 16, d <= 1 << 16, n <= 1 << 24 else { throw corrupt("bad quantized-tensor shape") }
        let q = n - r
        let groupsPerHead = axis == .perChannel ? ((q + g - 1) / g) * d : q * ((d + g - 1) / g)
        let groups = h * groupsPerHead, codesCount = h * q * d
        let codeBytes = (codesCount * bits + 7) / 8, esz = dtype.elementSize!
        guard blob.count == headerSize + 4 * groups + codeBytes + h * r * d * esz else {
            throw corrupt("quantized tensor of \(blob.count) bytes does not match its header")
        }
        var params = [Float](repeating: 0, count: 2 * groups)
        var halves = [UInt16](repeating: 0, count: 2 * groups)
        halves.withUnsafeMutableBytes { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: blob[headerSize ..< headerSize + 4 * groups])) }
        halves.withUnsafeBufferPointer { hp in params.withUnsafeMutableBufferPointer { NumericKernels.halfToFloat(hp.baseAddress!, $0.baseAddress!, count: 2 * groups) } }
        var x = [Float](repeating: 0, count: h * q * d)
        let mask = UInt8((1 << bits) - 1)
        let codes = UnsafeRawBufferPointer(rebasing: blob[headerSize + 4 * groups ..< headerSize + 4 * groups + codeBytes])
        var codeIndex = 0, groupIndex = 0
        x.withUnsafeMutableBufferPointer { xs in
            params.withUnsafeBufferPointer { p in
                func dequantize(_ offsets: StrideTo<Int>) {
                    let m = p[groupIndex], s = p[groups + groupIndex]
                    for i in offsets {
                        let bit = codeIndex * bits
                        let c = (codes[bit >> 3] >> UInt8(bit & 7)) & mask
                        xs[i] = m + Float(c) * s
                        codeIndex += 1
                    }
                    groupIndex += 1
                }
                for head in 0 ..< h {
                    let base = head * q * d
                    switch axis {
                    case .perChannel:
                        var t0 = 0
                        while t0 < q {
                            let t1 = min(q, t0 + g)
                            for c in 0 ..< d { dequantize(stride(from: base + t0 * d + c, to: base + t1 * d + c, by: d)) }
                            t0 = t1
                        }
                    case .perToken:
                        for tok in 0 ..< q {
                            var c0 = 0
                            while c0 < d {
                                let c1 = min(d, c0 + g)
                                dequantize(stride(from: base + tok * d + c0, to: base + tok * d + c1, by: 1))
                                c0 = c1
                            }
                        }
                    }
                }
            }
        }
        let quantized = try KVTensor(floats: x, dtype: dtype, heads: h, tokens: q, headDim: d)
        guard r > 0 else { return quantized }
        let resStart = headerSize + 4 * groups + codeBytes
        let residual = try KVTensor(dtype: dtype, heads: h, tokens: r, headDim: d, bytes: Array(blob[resStart...]))
        return q == 0 ? residual : try KVTensor.concatenate([quantized, residual])
    }
}

/// Reconstruction error of a lossy round trip.
public struct KVError: Sendable, Equatable, Codable {
    /// The largest absolute difference.
    public var maxAbs: Double
    /// √(Σ(x − x̂)²) / √(Σx²).
    public var relativeRMS: Double

    /// The error of `reconstructed` against `original`.
    public static func measure(_ original: KVTensor, _ reconstructed: KVTensor) -> KVError {
        let a = original.floats(), b = reconstructed.floats()
        precondition(a.count == b.count)
        var maxAbs = 0.0, err = 0.0, norm = 0.0
        for i in a.indices {
            let e = Double(a[i]) - Double(b[i])
            maxAbs = max(maxAbs, abs(e))
            err += e * e
            norm += Double(a[i]) * Double(a[i])
        }
        return KVError(maxAbs: maxAbs, relativeRMS: norm > 0 ? (err / norm).squareRoot() : err.squareRoot())
    }

    /// The worse of two errors, field by field (relative RMS combined by the caller's weights is not kept).
    public func worst(_ other: KVError) -> KVError {
        KVError(maxAbs: max(maxAbs, other.maxAbs), relativeRMS: max(relativeRMS, other.relativeRMS))
    }
}
