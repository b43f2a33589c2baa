import Foundation
import Testing
import WStoreTestSupport

@testable import WStoreCLI

/// `wstore bench kv-remote` against a real redis-server the test starts: every path runs and
/// checks what it delivered (the lookups bit-exact), for each chunk size asked; no timing is asserted.
@Suite(.enabled(if: RedisServer.available, "redis-server not found after `make deps`"))
struct BenchKVRemoteTests {
    @Test func everyPathRunsForEachChunkSize() throws {
        let server = try RedisServer()
        let bench = try #require(
            try WStoreCommand.parseAsRoot([
                "bench", "kv-remote", "--remote", server.url, "--tokens", "64", "--chunk-tokens", "16",
                "--chunk-tokens", "32", "--model-shape", "layers=2,kv_heads=2,head_dim=32,dtype=bf16", "--rounds", "2",
            ]) as? BenchKVRemote)
        for chunkTokens in bench.chunkTokens {
            let report = try bench.measure(chunkTokens: chunkTokens)
            #expect(report.chunks == 64 / chunkTokens && report.chunkTokens == chunkTokens)
            #expect(report.rawBytes == 2 * 2 * 64 * 2 * 32 * 2)  // K and V × layers × tokens × heads × dim × bf16
            #expect(report.valueBytes > 0 && report.rounds.count == 2)
            #expect(report.rounds.allSatisfy { $0.lookupSeconds > 0 && $0.pipelinedGetSeconds > 0 })
        }
        // The benchmark deletes what it put into Redis.
        #expect(try server.cli(["dbsize"]).trimmingCharacters(in: .whitespacesAndNewlines) == "0")
    }

    @Test func chunkSizesOutsideThePromptAreUsageErrors() {
        for bad in ["0", "128"] {
            #expect(
                usageError([
                    "bench", "kv-remote", "--remote", "redis://127.0.0.1:1", "--tokens", "64", "--chunk-tokens", bad,
                ]) != nil)
        }
    }
}
