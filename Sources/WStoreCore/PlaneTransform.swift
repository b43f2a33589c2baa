import CPlanes

/// How a tensor's bytes are rearranged into planes before compression.
///
/// Within each element, bytes of equal significance behave alike (exponent bytes
/// repeat a few values; low mantissa bytes are nearly random), so grouping them into
/// planes lets the entropy coder see each kind on its own, the ZipNN observation.
/// The raw value is the transform code in the record header.
package enum PlaneTransform: UInt8, Sendable {
    /// One plane: the bytes as they are.
    case none = 0
    /// 2-byte elements: plane 0 holds every high byte, plane 1 every low byte.
    case group2 = 1
    /// 4-byte elements: four planes, most significant byte first.
    case group4 = 2
    /// bf16: each 16-bit element is rotated left by one bit, so that plane 0 holds
    /// the 8 exponent bits and plane 1 the 7 mantissa bits followed by the sign.
    case rotateGroup2 = 3
    /// f32: each 32-bit element is rotated left by one bit, so that plane 0 holds the
    /// 8 exponent bits; planes 1-3 hold the mantissa and, last, the sign.
    case rotateGroup4 = 4

    /// Bytes per element the transform works on.
    package var width: Int {
        switch self {
        case .none: 1
        case .group2, .rotateGroup2: 2
        case .group4, .rotateGroup4: 4
        }
    }

    /// Splits `src` (a whole number of elements) into `width` planes of
    /// `src.count / width` bytes each, written back to back into `dst`.
    package func split(_ src: UnsafeRawBufferPointer, into dst: UnsafeMutableRawBufferPointer) {
        precondition(src.count % width == 0 && dst.count >= src.count)
        let n = src.count / width
        guard n > 0 else { return }
        let out = dst.baseAddress!.assumingMemoryBound(to: UInt8.self)
        switch self {
        case .none:
            dst.baseAddress!.copyMemory(from: src.baseAddress!, byteCount: src.count)
        case .group2, .rotateGroup2:
            precondition(
                src.baseAddress! + src.count <= dst.baseAddress! || dst.baseAddress! + src.count <= src.baseAddress!,
                "split into overlapping memory")
            wsp_split2(
                src.baseAddress!.assumingMemoryBound(to: UInt8.self), n, self == .rotateGroup2 ? 1 : 0, out, out + n)
        case .group4, .rotateGroup4:
            let rotate = self == .rotateGroup4
            let p0 = out, p1 = out + n, p2 = out + 2 * n, p3 = out + 3 * n
            for i in 0 ..< n {
                var v = src.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)
                if rotate { v = (v << 1) | (v >> 31) }
                p0[i] = UInt8(truncatingIfNeeded: v >> 24)
                p1[i] = UInt8(truncatingIfNeeded: v >> 16)
                p2[i] = UInt8(truncatingIfNeeded: v >> 8)
                p3[i] = UInt8(truncatingIfNeeded: v)
            }
        }
    }

    /// Reassembles elements from `width` planes of `count` bytes each, the inverse
    /// of ``split(_:into:)``. `planes[k]` is plane k.
    package func merge(planes: UnsafePointer<UnsafePointer<UInt8>>, count n: Int, into dst: UnsafeMutableRawPointer) {
        guard n > 0 else { return }
        switch self {
        case .none:
            dst.copyMemory(from: planes[0], byteCount: n)
        case .group2, .rotateGroup2:
            wsp_merge2(
                planes[0], planes[1], n, self == .rotateGroup2 ? 1 : 0, dst.assumingMemoryBound(to: UInt8.self))
        case .group4, .rotateGroup4:
            let p0 = planes[0], p1 = planes[1], p2 = planes[2], p3 = planes[3]
            let out = dst.assumingMemoryBound(to: UInt32.self)
            if self == .rotateGroup4 {
                for i in 0 ..< n {
                    let v = UInt32(p0[i]) << 24 | UInt32(p1[i]) << 16 | UInt32(p2[i]) << 8 | UInt32(p3[i])
                    out[i] = ((v >> 1) | (v << 31)).littleEndian
                }
            } else {
                for i in 0 ..< n {
                    out[i] =
                        (UInt32(p0[i]) << 24 | UInt32(p1[i]) << 16 | UInt32(p2[i]) << 8 | UInt32(p3[i])).littleEndian
                }
            }
        }
    }
}
