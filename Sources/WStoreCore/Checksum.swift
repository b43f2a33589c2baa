import CXXHash

/// xxh3-64 of a byte range, the checksum of every record. On x86 this calls the
/// run-time-dispatched entry point (AVX2/AVX-512 where available), which returns the
/// same value as `XXH3_64bits`.
/// The corresponding C function is `XXH3_64bits` (`XXH3_64bits_dispatch` on x86).
@inline(__always)
package func xxh3(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
    #if arch(x86_64) || arch(i386)
        XXH3_64bits_dispatch(bytes.baseAddress, bytes.count)
    #else
        XXH3_64bits(bytes.baseAddress, bytes.count)
    #endif
}

/// xxh3-64 with a seed: the chained hash of KV prefix chunks.
/// The corresponding C function is `XXH3_64bits_withSeed`.
@inline(__always)
package func xxh3(_ bytes: UnsafeRawBufferPointer, seed: UInt64) -> UInt64 {
    #if arch(x86_64) || arch(i386)
        XXH3_64bits_withSeed_dispatch(bytes.baseAddress, bytes.count, seed)
    #else
        XXH3_64bits_withSeed(bytes.baseAddress, bytes.count, seed)
    #endif
}

/// xxh3-64 over bytes fed in order, piece by piece: the same value as ``xxh3(_:)`` of
/// the concatenation. Lets a decoder hash each frame while it is still in cache.
/// The corresponding C functions are `XXH3_64bits_reset`, `XXH3_64bits_update` and
/// `XXH3_64bits_digest`.
package struct XXH3Stream: ~Copyable {
    private let state: OpaquePointer

    package init() {
        guard let s = XXH3_createState() else { preconditionFailure("XXH3_createState: out of memory") }
        state = s
        XXH3_64bits_reset(state)
    }

    deinit { XXH3_freeState(state) }

    package func update(_ bytes: UnsafeRawBufferPointer) {
        #if arch(x86_64) || arch(i386)
            _ = XXH3_64bits_update_dispatch(state, bytes.baseAddress, bytes.count)
        #else
            _ = XXH3_64bits_update(state, bytes.baseAddress, bytes.count)
        #endif
    }

    package func digest() -> UInt64 { XXH3_64bits_digest(state) }
}
