import CKernels

/// GGML-layout Q8_0 / Q4_0 blocks of 32 elements along the last dimension
/// (format-spec/FORMAT.md §8): quantization from f32/f16/bf16 and dequantization back.
/// Each call runs an AVX2/F16C path when the CPU has one and a portable path otherwise,
/// both bit-identical to the scalar ``reference`` paths (ggml's reference quantizer).
package enum BlockKernels {
    /// A block type, by its ggml type id.
    package enum BlockType: Int32, Sendable, CaseIterable {
        case q4_0 = 2
        case q8_0 = 8

        /// Bytes of one block of ``elementsPerBlock`` elements.
        package var blockBytes: Int { Int(wsk_block_bytes(rawValue)) }
    }

    /// The float type of the dense side of a conversion.
    package enum FloatType: Int32, Sendable, CaseIterable {
        case f32 = 0, f16 = 1, bf16 = 2

        /// Bytes per element.
        package var size: Int { self == .f32 ? 4 : 2 }
    }

    /// Elements per block, for both block types.
    package static let elementsPerBlock = 32

    /// Quantizes `count` elements (a multiple of 32) of `source` into `count / 32` blocks at `dest`.
    /// Returns the number of blocks whose scale is not finite (an infinity or NaN in the input,
    /// or a scale beyond f16's range); such blocks dequantize to infinities or NaNs.
    /// With `reference`, runs ggml's scalar code as written (for tests and benchmarks).
    /// The corresponding C function is `wsk_quantize_blocks` (`wsk_quantize_blocks_ref`).
    package static func quantize(
        _ type: BlockType, from source: UnsafeRawPointer, as floatType: FloatType, count: Int,
        into dest: UnsafeMutableRawPointer, reference: Bool = false
    ) -> Int {
        precondition(count % elementsPerBlock == 0, "block quantization of \(count) elements")
        let d = dest.assumingMemoryBound(to: UInt8.self)
        let r =
            reference
            ? wsk_quantize_blocks_ref(type.rawValue, source, floatType.rawValue, count, d)
            : wsk_quantize_blocks(type.rawValue, source, floatType.rawValue, count, d)
        precondition(r >= 0, "wsk_quantize_blocks refused its arguments")
        return r
    }

    /// Dequantizes `count` elements (a multiple of 32) of the blocks at `source` into `dest` as
    /// `floatType` (products in float, then rounded to nearest even for f16 and bf16).
    /// The corresponding C function is `wsk_dequantize_blocks` (`wsk_dequantize_blocks_ref`).
    package static func dequantize(
        _ type: BlockType, from source: UnsafeRawPointer, count: Int, into dest: UnsafeMutableRawPointer,
        as floatType: FloatType, reference: Bool = false
    ) {
        precondition(count % elementsPerBlock == 0, "block dequantization of \(count) elements")
        let s = source.assumingMemoryBound(to: UInt8.self)
        let r =
            reference
            ? wsk_dequantize_blocks_ref(type.rawValue, s, count, dest, floatType.rawValue)
            : wsk_dequantize_blocks(type.rawValue, s, count, dest, floatType.rawValue)
        precondition(r == 0, "wsk_dequantize_blocks refused its arguments")
    }
}
