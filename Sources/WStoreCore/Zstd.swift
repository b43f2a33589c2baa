import CZstd
import Synchronization

/// An error from zstd (zstd.h `ZSTD_isError` / `ZSTD_getErrorName`).
package struct ZstdError: Error, CustomStringConvertible, Sendable {
    package let operation: String
    package let message: String
    package var description: String { "\(operation) failed: \(message)" }

    @inline(__always)
    static func check(_ rc: Int, _ operation: @autoclosure () -> String) throws(ZstdError) -> Int {
        if ZSTD_isError(rc) != 0 {
            throw ZstdError(operation: operation(), message: String(cString: ZSTD_getErrorName(rc)))
        }
        return rc
    }
}

/// How one stream is compressed.
package enum ZstdProfile: Sendable, Hashable {
    /// A plain zstd compression level.
    case level(Int32)
    /// For byte planes of floating-point tensors (exponent and sign/mantissa bytes):
    /// `ZSTD_fast` with `minMatch` 7 and a 128-entry hash table. Such planes have
    /// short repeats that cost more to code as matches than as literals; these
    /// parameters leave almost everything to zstd's Huffman literal coder, which
    /// reaches the order-0 entropy and decodes at Huffman speed.
    case plane
}

/// zstd compression and decompression with contexts kept in a pool and reused.
package enum Zstd {
    /// A context pointer moved between threads through the pool; zstd contexts may be
    /// used by one thread at a time, which the pool guarantees.
    private struct Context: @unchecked Sendable { let pointer: OpaquePointer }
    private static let cctxPool = Mutex<[Context]>([])
    private static let dctxPool = Mutex<[Context]>([])

    /// The largest compressed size of `size` input bytes. The corresponding C function is `ZSTD_compressBound`.
    package static func bound(_ size: Int) -> Int { ZSTD_compressBound(size) }

    /// Compresses `src` into `dst` as one frame; returns the compressed size.
    /// The corresponding C function is `ZSTD_compress2`.
    package static func compress(
        _ src: UnsafeRawBufferPointer, into dst: UnsafeMutableRawBufferPointer,
        profile: ZstdProfile
    ) throws -> Int {
        let cctx = cctxPool.withLock { $0.popLast() } ?? Context(pointer: ZSTD_createCCtx()!)
        defer { cctxPool.withLock { $0.append(cctx) } }
        let c = cctx.pointer
        _ = try ZstdError.check(ZSTD_CCtx_reset(c, ZSTD_reset_session_and_parameters), "ZSTD_CCtx_reset")
        switch profile {
        case .level(let level):
            _ = try ZstdError.check(
                ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, level), "ZSTD_CCtx_setParameter(level)")
        case .plane:
            _ = try ZstdError.check(
                ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, 1), "ZSTD_CCtx_setParameter(level)")
            _ = try ZstdError.check(
                ZSTD_CCtx_setParameter(c, ZSTD_c_strategy, Int32(ZSTD_fast.rawValue)),
                "ZSTD_CCtx_setParameter(strategy)")
            _ = try ZstdError.check(ZSTD_CCtx_setParameter(c, ZSTD_c_minMatch, 7), "ZSTD_CCtx_setParameter(minMatch)")
            _ = try ZstdError.check(ZSTD_CCtx_setParameter(c, ZSTD_c_hashLog, 7), "ZSTD_CCtx_setParameter(hashLog)")
        }
        // No checksum or content size in the frame: the record carries both.
        _ = try ZstdError.check(ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 0), "ZSTD_CCtx_setParameter(checksum)")
        return try ZstdError.check(
            ZSTD_compress2(c, dst.baseAddress, dst.count, src.baseAddress, src.count), "ZSTD_compress2")
    }

    /// Decompresses one frame into exactly `dst.count` bytes.
    /// - Throws: ``ZstdError`` when the frame is damaged or decodes to another size.
    /// The corresponding C function is `ZSTD_decompressDCtx`.
    package static func decompress(_ src: UnsafeRawBufferPointer, into dst: UnsafeMutableRawBufferPointer) throws {
        let dctx = dctxPool.withLock { $0.popLast() } ?? Context(pointer: ZSTD_createDCtx()!)
        defer { dctxPool.withLock { $0.append(dctx) } }
        let n = try ZstdError.check(
            ZSTD_decompressDCtx(dctx.pointer, dst.baseAddress, dst.count, src.baseAddress, src.count),
            "ZSTD_decompressDCtx")
        if n != dst.count {
            throw ZstdError(operation: "ZSTD_decompressDCtx", message: "decoded \(n) bytes, expected \(dst.count)")
        }
    }
}
