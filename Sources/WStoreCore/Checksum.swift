import CXXHash

/// xxh3-64 of a byte range, the checksum of every record. The corresponding C
/// function is `XXH3_64bits`.
@inline(__always)
package func xxh3(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
    XXH3_64bits(bytes.baseAddress, bytes.count)
}

/// xxh3-64 with a seed: the chained hash of KV prefix chunks. The corresponding C
/// function is `XXH3_64bits_withSeed`.
@inline(__always)
package func xxh3(_ bytes: UnsafeRawBufferPointer, seed: UInt64) -> UInt64 {
    XXH3_64bits_withSeed(bytes.baseAddress, bytes.count, seed)
}

