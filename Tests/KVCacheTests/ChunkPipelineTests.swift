import Foundation
import Synchronization
import Testing
import WStoreTestSupport

@testable import KVCache
@testable import WStoreCore

/// The store's chunk pipeline: a chunk encoded by its own thread and the writer together is
/// the chunk one thread encodes, byte for byte, and a failure on either side reaches the writer.
@Suite struct ChunkPipelineTests {
    /// Eight layers of random f16 keys and values for `tokens` tokens.
    func rows(tokens: Int, seed: UInt64) throws -> KVCacheData {
        var rng = SplitMix64(seed: seed)
        return try KVCacheData(
            layers: (0 ..< 8).map { _ in
                try KVLayer(
                    keys: KVTensor(
                        floats: rng.normals(4 * tokens * 32), dtype: .f16, heads: 4, tokens: tokens, headDim: 32),
                    values: KVTensor(
                        floats: rng.normals(4 * tokens * 32), dtype: .f16, heads: 4, tokens: tokens, headDim: 32))
            })
    }

    @Test(arguments: [KVCodec.lossless, .raw, .int4], [1, 2])
    func sharedEncodingIsTheOneThreadEncoding(codec: KVCodec, threads: Int) throws {
        let chunks = try (0 ..< 5).map { try rows(tokens: 64, seed: UInt64($0)) }
        for startOnAThread in [true, false] {
            try encodeThroughThePipeline(chunks, codec: codec, threads: threads, startOnAThread: startOnAThread)
        }
    }

    func encodeThroughThePipeline(_ chunks: [KVCacheData], codec: KVCodec, threads: Int, startOnAThread: Bool) throws {
        let pipeline = ChunkPipeline(missing: [0, 2, 3, 4], startOnAThread: startOnAThread) { i in
            ChunkEncoding(key: UInt64(100 + i), codec: codec, kivi: KIVIOptions(), threads: threads) { chunks[i] }
        }
        pipeline.start()
        for i in 0 ..< 5 {
            let value = try pipeline.value(i)
            if i == 1 {
                #expect(value == nil)  // not missing
                continue
            }
            let shared = try #require(value).bytes()
            let alone = try KVChunk.encode(chunks[i], key: UInt64(100 + i), codec: codec, kivi: KIVIOptions())
            #expect(shared == alone, "chunk \(i), \(codec), \(threads) threads, on a thread: \(startOnAThread)")
            pipeline.release(i)
        }
    }

    /// A chunk whose rows cannot be made throws to the writer, started on a thread or not.
    @Test(arguments: [true, false]) func aFailureToMakeRowsReachesTheWriter(startOnAThread: Bool) throws {
        let chunk = try rows(tokens: 16, seed: 9)
        let pipeline = ChunkPipeline(missing: [0, 1], startOnAThread: startOnAThread) { i in
            ChunkEncoding(key: 7, codec: .lossless, kivi: KIVIOptions(), threads: 1) {
                if i == 1 { throw WStoreError.invalidArgument("rows of chunk 1") }
                return chunk
            }
        }
        pipeline.start()
        _ = try pipeline.value(0)
        #expect(throws: WStoreError.invalidArgument("rows of chunk 1")) { try pipeline.value(1) }
    }
}
