import WStoreCore
import WStoreKernels

/// Conversions between dense weights and the GGML blocks of a variant (format-spec/FORMAT.md §8),
/// for engines without kernels of their own for `Q8_0` / `Q4_0`. Vectorized (AVX2/F16C when the
/// CPU has them), bit-identical to ggml's reference code.
public enum VariantBlocks {
    /// Dequantizes `elements` elements of `precision` blocks into `dest` as `dtype`
    /// (f32, f16 or bf16; each value `q·d` computed in float, then rounded to nearest even).
    /// - Throws: ``WStoreError/invalidArgument(_:)`` for ``ExpertPrecision/exact``, another
    ///   dtype, `elements` not a multiple of 32, or buffers of the wrong size.
    public static func dequantize(
        _ blocks: UnsafeRawBufferPointer, precision: ExpertPrecision, elements: Int,
        into dest: UnsafeMutableRawBufferPointer, as dtype: DType
    ) throws {
        guard let bt = VariantQuantizer.blockType(precision) else {
            throw WStoreError.invalidArgument("exact is not a block precision")
        }
        guard let ft = VariantQuantizer.floatType(dtype) else {
            throw WStoreError.invalidArgument("dequantize to \(dtype): use f32, f16 or bf16")
        }
        guard elements >= 0, elements % BlockKernels.elementsPerBlock == 0 else {
            throw WStoreError.invalidArgument("\(elements) elements are not whole blocks of 32")
        }
        guard blocks.count == elements / BlockKernels.elementsPerBlock * bt.blockBytes,
            dest.count == elements * ft.size
        else {
            throw WStoreError.invalidArgument(
                "\(elements) elements of \(precision) take \(elements / 32 * bt.blockBytes) bytes and give "
                    + "\(elements * ft.size) bytes of \(dtype); got \(blocks.count) and \(dest.count)")
        }
        guard elements > 0 else { return }
        BlockKernels.dequantize(bt, from: blocks.baseAddress!, count: elements, into: dest.baseAddress!, as: ft)
    }

    /// Quantizes dense weights of `dtype` (f32, f16 or bf16) and logical `shape` as `precision`
    /// blocks, bit for bit as ggml's `quantize_row_q8_0_ref` / `quantize_row_q4_0_ref`.
    /// - Throws: ``WStoreError/invalidArgument(_:)`` when the part cannot have that variant
    ///   (another dtype, a last dimension not a multiple of 32, non-finite weights).
    public static func quantize(
        _ source: UnsafeRawBufferPointer, dtype: DType, shape: [Int], precision: ExpertPrecision,
        threads: Int = 1
    ) throws -> [UInt8] {
        if let why = VariantQuantizer.ineligibility(dtype: dtype, shape: shape) {
            throw WStoreError.invalidArgument("no \(precision) blocks: \(why)")
        }
        guard
            let out = try VariantQuantizer.quantize(
                source, dtype: dtype, shape: shape, precision: precision, threads: threads)
        else { throw WStoreError.invalidArgument("exact is not a block precision") }
        return out
    }
}
