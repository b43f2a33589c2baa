import WStoreCore
import WStoreKernels

extension ExpertLayout.Part {
    /// Writes this part's values, read from `buffer` (the expert's resident buffer), into
    /// `dest` as `dtype`: blocks through the vectorized dequantize kernel, exact values
    /// converted (copied when already of `dtype`).
    /// - Throws: ``WStoreError/invalidArgument(_:)`` for a `dtype` other than f32, f16 or
    ///   bf16, an exact part of another dtype, or a `dest` that is not `elements × size` bytes.
    package func dequantize(from buffer: UnsafeRawPointer, into dest: UnsafeMutableRawBufferPointer, as dtype: DType) throws {
        let out: Int
        switch dtype {
        case .f32: out = 4
        case .f16, .bf16: out = 2
        default: throw WStoreError.invalidArgument("dequantize part \(name) to \(dtype): use f32, f16 or bf16")
        }
        guard dest.count == elements * out else {
            throw WStoreError.invalidArgument(
                "part \(name) has \(elements) elements, \(elements * out) bytes as \(dtype); the buffer has \(dest.count)")
        }
        let source = UnsafeRawBufferPointer(start: buffer + offset, count: size)
        if precision != .exact {
            try VariantBlocks.dequantize(source, precision: precision, elements: elements, into: dest, as: dtype)
            return
        }
        if self.dtype == dtype {
            dest.copyMemory(from: source)
            return
        }
        guard [.f32, .f16, .bf16].contains(self.dtype) else {
            throw WStoreError.invalidArgument("part \(name) is \(self.dtype); only f32, f16 and bf16 parts convert")
        }
        // Exact floats of another width: through f32 (exact for f16 and bf16 sources).
        var wide = [Float](repeating: 0, count: elements)
        wide.withUnsafeMutableBufferPointer { w in
            let n = elements
            switch self.dtype {
            case .f32: w.baseAddress!.update(from: source.assumingMemoryBound(to: Float.self).baseAddress!, count: n)
            case .f16: NumericKernels.halfToFloat(source.assumingMemoryBound(to: UInt16.self).baseAddress!, w.baseAddress!, count: n)
            default:
                let b = source.assumingMemoryBound(to: UInt16.self)
                for i in 0 ..< n { w[i] = Float(bitPattern: UInt32(b[i]) << 16) }
            }
        }
        wide.withUnsafeBufferPointer { w in
            let n = elements
            switch dtype {
            case .f32: dest.baseAddress!.copyMemory(from: w.baseAddress!, byteCount: n * 4)
            case .f16: NumericKernels.floatToHalf(w.baseAddress!, dest.baseAddress!.assumingMemoryBound(to: UInt16.self), count: n)
            default:
                let d = dest.assumingMemoryBound(to: UInt16.self)
                for i in 0 ..< n { d[i] = bf16RoundedToNearestEven(w[i]) }
            }
        }
    }
}

/// The bf16 bit pattern of `f`, rounded to nearest even (NaN stays NaN).
@inline(__always) func bf16RoundedToNearestEven(_ f: Float) -> UInt16 {
    let bits = f.bitPattern
    if f.isNaN { return UInt16(bits >> 16) | 0x40 }
    let rounded = bits &+ 0x7FFF &+ ((bits >> 16) & 1)
    return UInt16(rounded >> 16)
}

extension ExpertHandle {
    /// Writes part `part`'s values into `dest` as `dtype` (f32, f16 or bf16; `dest` holds
    /// the part's elements of that size): a low-bit part's blocks are dequantized by the
    /// vectorized kernel (bit-identical to ggml's reference), an exact part is converted.
    /// For engines that want dense weights; ``withBytes(part:_:)`` lends the raw blocks.
    /// - Throws: ``WStoreError/notFound(_:)`` when the expert has no such part,
    ///   ``WStoreError/invalidArgument(_:)`` for another dtype or a `dest` of the wrong size.
    public func dequantize(part: String, into dest: UnsafeMutableRawBufferPointer, as dtype: DType) throws {
        guard let p = slot.layout.parts.first(where: { $0.name == part }) else {
            throw WStoreError.notFound("part \(part) of expert \(expert) of layer \(layer)")
        }
        try p.dequantize(from: baseAddress, into: dest, as: dtype)
    }

    /// Part `part`'s values as f32 in a new array (see ``dequantize(part:into:as:)``).
    /// - Throws: what ``dequantize(part:into:as:)`` throws.
    public func floats(part: String) throws -> [Float] {
        guard let p = slot.layout.parts.first(where: { $0.name == part }) else {
            throw WStoreError.notFound("part \(part) of expert \(expert) of layer \(layer)")
        }
        var out = [Float](repeating: 0, count: p.elements)
        try out.withUnsafeMutableBytes { try p.dequantize(from: baseAddress, into: $0, as: .f32) }
        return out
    }
}
