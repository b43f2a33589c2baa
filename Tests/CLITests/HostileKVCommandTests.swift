import Foundation
import KVCache
import Testing
import WStoreFormats
import WStoreTestSupport

@testable import WStoreCLI

/// `wstore kv compress` on KV files made to hurt: one line naming the file, exit 1, nothing written.
@Suite struct HostileKVCommandTests {
    /// A KV file written by numpy and safetensors; `edit` is Python run on the dict `t` before saving.
    static func kvFile(_ path: String, edit: String) throws {
        _ = try runPython([
            "-c",
            """
            import numpy as np
            from safetensors.numpy import save_file
            rng = np.random.default_rng(3)
            t = {}
            for l in range(2):
                t[f"layers.{l}.keys"] = rng.normal(size=(2, 96, 16)).astype(np.float16)
                t[f"layers.{l}.values"] = rng.normal(size=(2, 96, 16)).astype(np.float16)
                t[f"layers.{l}.queries"] = rng.normal(size=(4, 8, 16)).astype(np.float16)
            \(edit)
            save_file(t, "\(path)")
            """,
        ])
    }

    func compress(_ input: String, _ extra: [String] = []) throws {
        var cmd = try #require(
            try WStoreCommand.parseAsRoot(
                ["kv", "compress", "--input", input, "--output", input + ".out"] + extra) as? KVCompress)
        try cmd.run()
    }

    @Test(arguments: [
        (
            "t['layers.1.queries'][2, 5, 3] = np.nan",
            "layer 1: SnapKV cannot rank positions: the queries hold NaN or infinite values"
        ),
        ("t['layers.0.keys'][1, 40, 0] = np.inf", "layer 0: SnapKV cannot rank positions: the keys hold NaN"),
        ("t['layers.0.keys'][0, 7, 2] = -np.inf", "layer 0: SnapKV cannot rank positions: the keys hold NaN"),
        ("t['layers.1.keys'][0, 90, 2] = np.nan", "layer 1: SnapKV cannot rank positions: the keys hold NaN"),
        (
            "t['layers.00.keys'] = t.pop('layers.0.keys')",
            #"tensor "layers.00.keys": the layer must be a number without leading zeros"#
        ),
        ("t['layers.1.keys'] = t['layers.1.keys'][:, :50].copy()", "layer 1: keys [2, 50, 16]"),
        ("del t['layers.1.values']", "lacks layers.1.values"),
        ("t['layers.0.queries'] = t['layers.0.queries'].reshape(4, 128)", "layers.0.queries has shape [4, 128]"),
    ])
    func badKVInputIsOneLineNamingTheFileAndExitOne(_ edit: String, _ says: String) throws {
        let dir = TemporaryDirectory("kv-hostile")
        let input = dir.sub("kv.safetensors")
        try Self.kvFile(input, edit: edit)
        do {
            try compress(input, ["--snapkv", "window=8,capacity=32,kernel=3"])
            Issue.record("accepted: \(edit)")
        } catch {
            // An ImportError, not a usage error: ArgumentParser prints it as one line and exits 1.
            #expect(error is ImportError, "\(type(of: error)): \(error)")
            #expect("\(error)".hasPrefix(input + ": ") && "\(error)".contains(says), "\(error)")
            #expect(!"\(error)".contains("\n"))
            #expect(WStoreCommand.exitCode(for: error) == .failure)
        }
        #expect(!FileManager.default.fileExists(atPath: input + ".out"))
        // Without --snapkv, NaN and Inf are values like any other: kept bit for bit by the lossless codec.
        if edit.contains("np.nan") || edit.contains("np.inf") {
            try compress(input)
            #expect(FileManager.default.fileExists(atPath: input + ".out"))
        }
    }
}
