import Foundation
import Testing
import WStoreCore
import WStoreFormats
import WStoreTestSupport

@testable import WStoreCLI

/// Checkpoints made to hurt: each is refused with one line naming the file, and no
/// store is written.
@Suite struct HostileInputTests {
    /// Packs `source` into a fresh folder; returns the error line, and whether a store appeared.
    func pack(_ source: String, in dir: TemporaryDirectory) -> (error: String?, wrote: Bool) {
        do {
            try wstore("pack", source, "-o", dir.sub("out.wstore"), "--quiet")
            return (nil, true)
        } catch {
            return ("\(error)", FileManager.default.fileExists(atPath: dir.sub("out.wstore")))
        }
    }

    func python(_ script: String) throws {
        let r = runProcess("/usr/bin/env", [pythonExecutable, "-c", script])
        try #require(r.status == 0, "python failed: \(r.output)")
    }

    /// A GGUF file of one stacked expert tensor `blk.0.ffn_up_exps.weight`, `experts` × `width` f32, written by the gguf package.
    func stackedGGUF(_ path: String, experts: Int, width: Int) throws {
        try python(
            """
            import numpy as np, gguf
            w = gguf.GGUFWriter("\(path)", "qwen2moe")
            w.add_block_count(1)
            w.add_tensor("blk.0.ffn_up_exps.weight", np.ones((\(experts), 1, \(width)), dtype=np.float32))
            w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
            """)
    }

    @Test func aGGUFStackingTooManyExpertsIsRefused() throws {
        let dir = TemporaryDirectory()
        // 100,000 experts of one element: 0.4 MB that would become 100,000 records.
        try stackedGGUF(dir.sub("many.gguf"), experts: 100_000, width: 1)
        let r = pack(dir.sub("many.gguf"), in: dir)
        #expect(r.error?.hasPrefix(dir.sub("many.gguf") + ": ") == true)
        #expect(r.error?.contains("100000 experts, more than 65536 per layer") == true, "\(r.error ?? "packed")")
        #expect(!r.wrote)
        // 8 experts of 4 floats: records of 16 bytes.
        try stackedGGUF(dir.sub("tiny.gguf"), experts: 8, width: 4)
        let t = pack(dir.sub("tiny.gguf"), in: dir)
        #expect(t.error?.contains("8 experts of 16 bytes, under 64 bytes each") == true, "\(t.error ?? "packed")")
        // The same stack with experts of 64 bytes packs.
        try stackedGGUF(dir.sub("ok.gguf"), experts: 8, width: 16)
        #expect(pack(dir.sub("ok.gguf"), in: dir).error == nil)
    }

    /// A sharded checkpoint written by the safetensors package, with an index of `weightMap` (JSON) beside it.
    func sharded(_ dir: TemporaryDirectory, weightMap: String, config: String? = nil) throws -> String {
        let folder = dir.sub("ckpt")
        try python(
            """
            import numpy as np, os
            from safetensors.numpy import save_file
            os.makedirs("\(folder)", exist_ok=True)
            save_file({"a": np.ones((4, 4), dtype=np.float32)}, "\(folder)/model-00001-of-00002.safetensors")
            save_file({"b": np.ones((4,), dtype=np.float32)}, "\(folder)/model-00002-of-00002.safetensors")
            """)
        try Data(#"{"weight_map": \#(weightMap)}"#.utf8).write(
            to: URL(fileURLWithPath: folder + "/model.safetensors.index.json"))
        if let config { try Data(config.utf8).write(to: URL(fileURLWithPath: folder + "/config.json")) }
        return folder
    }

    @Test func anEmptyWeightMapBesideRealShardsIsRefused() throws {
        let dir = TemporaryDirectory()
        let folder = try sharded(dir, weightMap: "{}")
        let r = pack(folder, in: dir)
        #expect(r.error == folder + "/model.safetensors.index.json: index has an empty weight_map: it lists no tensor")
        #expect(!r.wrote)
    }

    @Test(arguments: [
        (#"{"num_hidden_layers": -1}"#, #""num_hidden_layers" is "-1", expected an integer from 1 to 65536"#),
        (#"{"num_hidden_layers": 9223372036854775807}"#, #""num_hidden_layers" is "9223372036854775807""#),
        (#"{"num_local_experts": -1}"#, #""num_local_experts" is "-1", expected an integer from 0 to 65536"#),
        (#"{"num_experts_per_tok": 1000000}"#, #""num_experts_per_tok" is "1000000""#),
        (#"{"num_local_experts": 8, "num_experts_per_tok": 9}"#, "top-k 9 exceeds the 8 experts per layer"),
        (#"{"num_hidden_layers": "many"}"#, #""num_hidden_layers" is "many""#),
    ])
    func negativeOrAbsurdConfigCountsAreRefused(_ config: String, _ says: String) throws {
        let dir = TemporaryDirectory()
        let folder = try sharded(
            dir, weightMap: #"{"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}"#,
            config: config)
        let r = pack(folder, in: dir)
        #expect(r.error?.hasPrefix(folder + "/config.json: ") == true, "\(r.error ?? "packed")")
        #expect(r.error?.contains(says) == true, "\(r.error ?? "packed")")
        #expect(r.error?.contains("\n") == false)
        #expect(!r.wrote)
    }

    @Test func aConfigWithSaneCountsPacksAndADenseConfigSaysNoExperts() throws {
        let dir = TemporaryDirectory()
        let folder = try sharded(
            dir, weightMap: #"{"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}"#,
            config: #"{"num_hidden_layers": 2, "num_experts": 0, "num_experts_per_tok": null}"#)
        #expect(pack(folder, in: dir).error == nil)
    }

    @Test func namesWithControlCharactersArePrintedEscaped() throws {
        let dir = TemporaryDirectory()
        // A tensor named with a newline, ESC and NUL, listed by an index in a shard that lacks it.
        let evil = "x\n\u{1B}[2J\u{0}y"
        let folder = try sharded(
            dir,
            weightMap: "{" + SafetensorsWriter.jsonString(evil)
                + #": "model-00001-of-00002.safetensors", "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}"#
        )
        let r = try #require(pack(folder, in: dir).error)
        #expect(r.contains(#"lists tensor "x\n\u{1B}[2J\0y" in "model-00001-of-00002.safetensors""#), "\(r)")
        #expect(!r.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F })
        // The one helper: quoted and escaped, printable text left alone.
        #expect("a\"b\\c\u{202E}d\u{7F}".quoted == #""a\"b\\c\u{202E}d\u{7F}""#)
        #expect("plain name".quoted == "\"plain name\"" && "layers.0.keys".escapingControls == "layers.0.keys")
        #expect(WStoreError.notFound("a\nb").description == #"not found: a\nb"#)
    }

    @Test func hugeLayerNumbersInNamesAreRefusedNotTrapped() throws {
        let dir = TemporaryDirectory()
        try python(
            """
            import numpy as np
            from safetensors.numpy import save_file
            save_file({"model.layers.9223372036854775807.mlp.experts.0.up_proj.weight": np.ones((4, 4), dtype=np.float32)},
                      "\(dir.sub("big.safetensors"))")
            save_file({"model.layers.9223372036854775807.input_layernorm.weight": np.ones((4,), dtype=np.float32)},
                      "\(dir.sub("dense.safetensors"))")
            """)
        for f in ["big.safetensors", "dense.safetensors"] {
            let r = pack(dir.sub(f), in: dir)
            #expect(r.error?.contains("names layer 9223372036854775807") == true, "\(r.error ?? "packed")")
        }
    }
}
