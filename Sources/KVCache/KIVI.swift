import WStoreCore
import WStoreKernels

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

    /// The number of groups of one head: per channel, one per channel and run of `g` tokens;
    /// per token, one per token and run of `g` channels.
    static func groupCount(axis: Axis, q: Int, d: Int, g: Int) -> Int {
        axis == .perChannel ? ((q + g - 1) / g) * d : q * ((d + g - 1) / g)
    }

    /// Quantizes `t` into a blob (not yet zstd-compressed).
    package static func encode(_ t: KVTensor, bits: Int, axis: Axis, options: KIVIOptions) -> [UInt8] {
        precondition([2, 4, 8].contains(bits) && options.group > 0 && options.residual >= 0)
        let h = t.heads, d = t.headDim, n = t.tokens
        let r = min(options.residual, n), q = n - r, g = options.group
        let x = t.floats()
        let perHead = groupCount(axis: axis, q: q, d: d, g: g)
        let groups = h * perHead
        let codesCount = h * q * d
        let codeBytes = (codesCount * bits + 7) / 8
        let residualBytes = h * r * d * t.elementSize
        var out = [UInt8](repeating: 0, count: headerSize + 4 * groups + codeBytes + residualBytes)
        let levels = Float((1 << bits) - 1)
        // Codes in blob order, one byte each, packed at the end.
        var codes = [UInt8](repeating: 0, count: codesCount)
        var mins = [Float](repeating: 0, count: groups), scales = [Float](repeating: 0, count: groups)
        x.withUnsafeBufferPointer { xs in
            codes.withUnsafeMutableBufferPointer { cs in
                var gi = 0, ci = 0
                /// Sets the f16 minimum and scale of group `gi` from its range; returns them as f32.
                func params(_ lo: Float, _ hi: Float) -> (Float, Float) {
                    let m16 = Float(Float16(lo.isFinite ? lo : 0))
                    let s16 = Float(Float16(max((hi.isFinite ? hi : 0) - m16, 0) / levels))
                    mins[gi] = m16
                    scales[gi] = s16
                    gi += 1
                    return (m16, s16)
                }
                for head in 0 ..< h {
                    let base = xs.baseAddress! + head * n * d
                    switch axis {
                    case .perChannel:
                        let buf = UnsafeMutablePointer<Float>.allocate(capacity: 4 * d)
                        defer { buf.deallocate() }
                        let lo = buf, hi = buf + d, m = buf + 2 * d, inv = buf + 3 * d
                        var t0 = 0
                        while t0 < q {
                            let t1 = min(q, t0 + g), len = t1 - t0
                            for c in 0 ..< d {
                                lo[c] = .infinity
                                hi[c] = -.infinity
                            }
                            for tok in t0 ..< t1 {
                                NumericKernels.minMaxUpdate(base + tok * d, count: d, lo: lo, hi: hi)
                            }
                            for c in 0 ..< d {
                                let (m16, s16) = params(lo[c], hi[c])
                                m[c] = m16
                                inv[c] = s16 > 0 ? 1 / s16 : 0
                            }
                            // Codes stay in element order (token-major), so this loop runs along channels.
                            let dst = cs.baseAddress! + ci
                            for tok in t0 ..< t1 {
                                NumericKernels.quantize(
                                    base + tok * d, count: d, min: m, inverseScale: inv, perElement: true,
                                    levels: levels, into: dst + (tok - t0) * d)
                            }
                            ci += len * d
                            t0 = t1
                        }
                    case .perToken:
                        for tok in 0 ..< q {
                            let row = base + tok * d
                            var c0 = 0
                            while c0 < d {
                                let c1 = min(d, c0 + g)
                                let (lo, hi) = NumericKernels.minMax(row + c0, count: c1 - c0)
                                let (m16, s16) = params(lo, hi)
                                var mPair = m16, inv: Float = s16 > 0 ? 1 / s16 : 0
                                NumericKernels.quantize(
                                    row + c0, count: c1 - c0, min: &mPair, inverseScale: &inv, perElement: false,
                                    levels: levels, into: cs.baseAddress! + ci)
                                ci += c1 - c0
                                c0 = c1
                            }
                        }
                    }
                }
                precondition(gi == groups && ci == codesCount)
            }
        }
        out.withUnsafeMutableBytes { o in
            func put32(_ v: UInt32, _ at: Int) { o.storeBytes(of: v.littleEndian, toByteOffset: at, as: UInt32.self) }
            put32(magic, 0)
            o[4] = 1
            o[5] = UInt8(bits)
            o[6] = axis.rawValue
            o[7] = t.dtype.code
            put32(UInt32(h), 8)
            put32(UInt32(n), 12)
            put32(UInt32(d), 16)
            put32(UInt32(g), 20)
            put32(UInt32(r), 24)
            let p = (o.baseAddress! + headerSize).assumingMemoryBound(to: UInt16.self)
            for i in 0 ..< groups {
                p[i] = Float16(mins[i]).bitPattern.littleEndian
                p[groups + i] = Float16(scales[i]).bitPattern.littleEndian
            }
            let packed = (o.baseAddress! + headerSize + 4 * groups).assumingMemoryBound(to: UInt8.self)
            codes.withUnsafeBufferPointer { pack($0, bits: bits, into: packed) }
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

    /// Packs one-byte codes `bits` wide, element k at bit k·bits (least significant first).
    static func pack(_ codes: UnsafeBufferPointer<UInt8>, bits: Int, into out: UnsafeMutablePointer<UInt8>) {
        let n = codes.count
        switch bits {
        case 8:
            out.update(from: codes.baseAddress!, count: n)
        case 4:
            for i in 0 ..< n / 2 { out[i] = codes[2 * i] | codes[2 * i + 1] << 4 }
            if n % 2 == 1 { out[n / 2] = codes[n - 1] }
        default:
            for i in 0 ..< n / 4 {
                out[i] = codes[4 * i] | codes[4 * i + 1] << 2 | codes[4 * i + 2] << 4 | codes[4 * i + 3] << 6
            }
            if n % 4 != 0 {
                var last: UInt8 = 0
                for k in 0 ..< n % 4 { last |= codes[n / 4 * 4 + k] << UInt8(2 * k) }
                out[n / 4] = last
            }
        }
    }

    /// The inverse of ``pack(_:bits:into:)``.
    static func unpack(_ packed: UnsafeRawBufferPointer, bits: Int, count n: Int, into out: UnsafeMutablePointer<UInt8>)
    {
        switch bits {
        case 8:
            out.update(from: packed.baseAddress!.assumingMemoryBound(to: UInt8.self), count: n)
        case 4:
            for i in 0 ..< n / 2 {
                let b = packed[i]
                out[2 * i] = b & 15
                out[2 * i + 1] = b >> 4
            }
            if n % 2 == 1 { out[n - 1] = packed[n / 2] & 15 }
        default:
            for i in 0 ..< n / 4 {
                let b = packed[i]
                out[4 * i] = b & 3
                out[4 * i + 1] = (b >> 2) & 3
                out[4 * i + 2] = (b >> 4) & 3
                out[4 * i + 3] = b >> 6
            }
            for k in 0 ..< n % 4 { out[n / 4 * 4 + k] = (packed[n / 4] >> UInt8(2 * k)) & 3 }
        }
    }

    /// The largest blob ``encode(_:bits:axis:options:)`` writes for `elements` values of
    /// `dtype`: the header, a min and a scale per value (group size 1), a byte of code
    /// and the value itself per value (the residual). A decoder allocates no more.
    package static func maxBlobSize(elements: Int, dtype: DType) -> Int {
        headerSize + elements * (4 + 1 + dtype.elementSize!)
    }

    /// The smallest blob ``encode(_:bits:axis:options:)`` writes for `elements` values at
    /// `bits` bits: the header and the packed codes alone (a residual and scales add to it).
    package static func minBlobSize(elements: Int, bits: Int) -> Int {
        headerSize + (elements * bits + 7) / 8
    }

    /// What a quantized blob's header says, checked against the blob's length.
    package struct Header {
        package let bits: Int
        package let axis: Axis
        package let dtype: DType
        package let heads: Int
        package let tokens: Int
        package let headDim: Int
        package let group: Int
        package let residual: Int
    }

    /// Parses and checks the header of a blob written by ``encode(_:bits:axis:options:)``.
    /// - Throws: ``WStoreError/corruptRecord(name:reason:)`` when the blob is inconsistent.
    package static func header(_ blob: UnsafeRawBufferPointer, name: String) throws -> Header {
        func corrupt(_ why: String) -> WStoreError { .corruptRecord(name: name, reason: why) }
        guard blob.count >= headerSize else { throw corrupt("quantized tensor shorter than its header") }
        func u32(_ at: Int) -> Int {
            Int(UInt32(littleEndian: blob.loadUnaligned(fromByteOffset: at, as: UInt32.self)))
        }
        guard UInt32(u32(0)) == magic, blob[4] == 1 else { throw corrupt("bad quantized-tensor magic or version") }
        let bits = Int(blob[5])
        guard [2, 4, 8].contains(bits), let axis = Axis(rawValue: blob[6]),
            let dtype = DType(code: blob[7], ggmlType: 0), KVTensor.supportedDTypes.contains(dtype)
        else {
            throw corrupt("bad quantized-tensor bits, axis or dtype")
        }
        let h = u32(8), n = u32(12), d = u32(16), g = u32(20), r = u32(24)
        guard g > 0, r <= n, h <= 1 << 16, d <= 1 << 16, n <= 1 << 24 else {
            throw corrupt("bad quantized-tensor shape")
        }
        let q = n - r
        let groups = h * groupCount(axis: axis, q: q, d: d, g: g)
        let codeBytes = (h * q * d * bits + 7) / 8
        guard blob.count == headerSize + 4 * groups + codeBytes + h * r * d * dtype.elementSize! else {
            throw corrupt("quantized tensor of \(blob.count) bytes does not match its header")
        }
        return Header(bits: bits, axis: axis, dtype: dtype, heads: h, tokens: n, headDim: d, group: g, residual: r)
    }

    /// Rebuilds the tensor from a blob written by ``encode(_:bits:axis:options:)``.
    /// - Throws: ``WStoreError/corruptRecord(name:reason:)`` when the blob is inconsistent.
    package static func decode(_ blob: UnsafeRawBufferPointer, name: String) throws -> KVTensor {
        let hd = try header(blob, name: name)
        let row = hd.headDim * hd.dtype.elementSize!
        let bytes = [UInt8](unsafeUninitializedCapacity: hd.heads * hd.tokens * row) { out, count in
            if !out.isEmpty {
                decode(
                    blob, hd,
                    into: KVRows(
                        base: UnsafeMutableRawPointer(out.baseAddress!), tokenStride: row,
                        headStride: hd.tokens * row))
            }
            count = out.count
        }
        return try KVTensor(dtype: hd.dtype, heads: hd.heads, tokens: hd.tokens, headDim: hd.headDim, bytes: bytes)
    }

    /// Rebuilds the tensor of a checked blob straight into `rows` (token `t` of head `h`
    /// at `rows.row(head: h, token: t)`), in the blob's dtype: dequantized a head at a
    /// time into a float scratch, each token row rounded into place.
    package static func decode(_ blob: UnsafeRawBufferPointer, _ hd: Header, into rows: KVRows) {
        let h = hd.heads, n = hd.tokens, d = hd.headDim, g = hd.group, r = hd.residual, bits = hd.bits
        let q = n - r, esz = hd.dtype.elementSize!
        let perHead = groupCount(axis: hd.axis, q: q, d: d, g: g)
        let groups = h * perHead, codesCount = h * q * d
        let codeBytes = (codesCount * bits + 7) / 8
        withUnsafeTemporaryAllocation(of: Float.self, capacity: max(1, 2 * groups + q * d)) { floats in
            let mins = floats.baseAddress!, scales = mins + groups, x = scales + groups
            for i in 0 ..< groups {
                mins[i] = Float(
                    Float16(
                        bitPattern: UInt16(
                            littleEndian: blob.loadUnaligned(fromByteOffset: headerSize + 2 * i, as: UInt16.self))))
                scales[i] = Float(
                    Float16(
                        bitPattern: UInt16(
                            littleEndian: blob.loadUnaligned(
                                fromByteOffset: headerSize + 2 * (groups + i), as: UInt16.self))))
            }
            withUnsafeTemporaryAllocation(of: UInt8.self, capacity: max(1, codesCount)) { codes in
                unpack(
                    UnsafeRawBufferPointer(
                        rebasing: blob[headerSize + 4 * groups ..< headerSize + 4 * groups + codeBytes]),
                    bits: bits, count: codesCount, into: codes.baseAddress!)
                let cs = UnsafePointer(codes.baseAddress!)
                var gi = 0, ci = 0
                for head in 0 ..< h {
                    switch hd.axis {
                    case .perChannel:
                        var t0 = 0
                        while t0 < q {
                            let t1 = min(q, t0 + g), len = t1 - t0
                            for tok in t0 ..< t1 {
                                NumericKernels.dequantize(
                                    cs + ci + (tok - t0) * d, count: d, min: mins + gi, scale: scales + gi,
                                    perElement: true, into: x + tok * d)
                            }
                            gi += d
                            ci += len * d
                            t0 = t1
                        }
                    case .perToken:
                        for tok in 0 ..< q {
                            var c0 = 0
                            while c0 < d {
                                let c1 = min(d, c0 + g)
                                NumericKernels.dequantize(
                                    cs + ci, count: c1 - c0, min: mins + gi, scale: scales + gi,
                                    perElement: false, into: x + tok * d + c0)
                                gi += 1
                                ci += c1 - c0
                                c0 = c1
                            }
                        }
                    }
                    for tok in 0 ..< q {
                        FloatCodec.encode(x + tok * d, count: d, as: hd.dtype, into: rows.row(head: head, token: tok))
                    }
                }
            }
        }
        guard r > 0 else { return }
        let resStart = headerSize + 4 * groups + codeBytes
        for head in 0 ..< h {
            for tok in 0 ..< r {
                rows.row(head: head, token: q + tok).copyMemory(
                    from: blob.baseAddress! + resStart + (head * r + tok) * d * esz, byteCount: d * esz)
            }
        }
    }
}

/// Where a tensor's token rows go: row (head `h`, token `t`) of `headDim` elements at
/// `base + t * tokenStride + h * headStride`.
package struct KVRows {
    package var base: UnsafeMutableRawPointer
    package var tokenStride: Int
    package var headStride: Int

    package init(base: UnsafeMutableRawPointer, tokenStride: Int, headStride: Int) {
        self.base = base
        self.tokenStride = tokenStride
        self.headStride = headStride
    }

    @inline(__always) package func row(head: Int, token: Int) -> UnsafeMutableRawPointer {
        base + token * tokenStride + head * headStride
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
