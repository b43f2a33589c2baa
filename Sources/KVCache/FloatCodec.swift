import WStoreCore
import WStoreKernels

/// Converts KV tensor bytes (f16, bf16, f32, little-endian) to and from floats.
package enum FloatCodec {
    /// The elements of `bytes` as floats.
    package static func decode(_ bytes: [UInt8], from dtype: DType) -> [Float] {
        bytes.withUnsafeBytes { decode($0, from: dtype) }
    }

    /// The elements of `raw` as floats.
    package static func decode(_ raw: UnsafeRawBufferPointer, from dtype: DType) -> [Float] {
        let n = raw.count / dtype.elementSize!
        return [Float](unsafeUninitializedCapacity: n) { out, count in
            decode(raw, from: dtype, into: out.baseAddress!)
            count = n
        }
    }

    /// Writes the elements of `raw` as floats into `out`.
    package static func decode(_ raw: UnsafeRawBufferPointer, from dtype: DType, into out: UnsafeMutablePointer<Float>)
    {
        let n = raw.count / dtype.elementSize!
        guard n > 0 else { return }
        switch dtype {
        case .f32:
            UnsafeMutableRawPointer(out).copyMemory(from: raw.baseAddress!, byteCount: n * 4)
        case .f16:
            if Int(bitPattern: raw.baseAddress!) % 2 == 0 {
                NumericKernels.halfToFloat(raw.baseAddress!.assumingMemoryBound(to: UInt16.self), out, count: n)
            } else {
                let tmp = [UInt16](unsafeUninitializedCapacity: n) { b, c in
                    UnsafeMutableRawPointer(b.baseAddress!).copyMemory(from: raw.baseAddress!, byteCount: 2 * n)
                    c = n
                }
                tmp.withUnsafeBufferPointer { NumericKernels.halfToFloat($0.baseAddress!, out, count: n) }
            }
        case .bf16:
            for i in 0 ..< n {
                let b = UInt32(raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
                out[i] = Float(bitPattern: b << 16)
            }
        default:
            preconditionFailure("FloatCodec.decode of \(dtype)")
        }
    }

    /// `floats` rounded to `dtype` (round to nearest even), as bytes.
    package static func encode(_ floats: [Float], as dtype: DType) -> [UInt8] {
        floats.withUnsafeBufferPointer { encode($0, as: dtype) }
    }

    /// `floats` rounded to `dtype` (round to nearest even), as bytes.
    package static func encode(_ floats: UnsafeBufferPointer<Float>, as dtype: DType) -> [UInt8] {
        let n = floats.count, size = dtype.elementSize!
        var out = [UInt8](repeating: 0, count: n * size)
        guard n > 0 else { return out }
        out.withUnsafeMutableBytes { encode(floats.baseAddress!, count: n, as: dtype, into: $0.baseAddress!) }
        return out
    }

    /// `count` floats rounded to `dtype` (round to nearest even), written at `dst`.
    package static func encode(
        _ floats: UnsafePointer<Float>, count n: Int, as dtype: DType, into dst: UnsafeMutableRawPointer
    ) {
        switch dtype {
        case .f32:
            dst.copyMemory(from: floats, byteCount: 4 * n)
        case .f16:
            NumericKernels.floatToHalf(floats, dst.assumingMemoryBound(to: UInt16.self), count: n)
        case .bf16:
            let p = dst.assumingMemoryBound(to: UInt16.self)
            for i in 0 ..< n { p[i] = bf16(floats[i]) }
        default:
            preconditionFailure("FloatCodec.encode as \(dtype)")
        }
    }

    /// A float rounded to bf16 (nearest even; NaN stays NaN).
    @inline(__always)
    package static func bf16(_ f: Float) -> UInt16 {
        let b = f.bitPattern
        if f.isNaN { return UInt16(b >> 16) | 0x40 }
        return UInt16((b &+ 0x7FFF &+ ((b >> 16) & 1)) >> 16)
    }
}
