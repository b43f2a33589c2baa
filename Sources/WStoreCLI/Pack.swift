import ArgumentParser
import Foundation
import WStoreCore
import WStoreFormats
import WeightStore

/// `wstore pack`: imports safetensors and GGUF checkpoints into a new store, atomically.
struct Pack: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Pack safetensors / GGUF checkpoints into a new store.",
        discussion: """
            SRC is a .safetensors file, a sharded checkpoint's *.safetensors.index.json, a .gguf file, \
            or a folder of them. The store is built beside STORE and moved into place only when \
            complete; a store already at STORE is replaced atomically, and kept untouched on any failure.
            """)

    @Argument(help: "Checkpoint files or folders.")
    var sources: [String]

    @Option(name: .shortAndLong, help: "The store directory to write.")
    var output: String

    @Option(help: "Codec: auto (zstd planes, raw when that saves < 5%), raw, or zstd.")
    var codec: CodecChoice = .auto

    @Option(help: "zstd level for planes that are not byte-grouped floats (1-19).")
    var level = 3

    @Option(help: "Compression threads (default: every core).")
    var threads: Int?

    @Option(help: "Model namespace (default: the first source's name).")
    var model: String?

    @Option(help: "JSON file with extra expert-naming rules (format-spec/IMPORT-EXPORT.md).")
    var mapping: String?

    @Option(
        help:
            "Raw bytes in flight, in MiB: two write transactions of half as much each, one encoding while the other is written."
    )
    var batchMib = 64

    @Option(
        name: .customLong("expert-variants"),
        help: """
            Also store quantized copies of every expert part: a comma-separated list of q8_0 (int8) \
            and q4_0 (int4), GGML blocks of 32 along the last dimension (format-spec/FORMAT.md §8).
            """)
    var expertVariants: String?

    @Flag(help: "Print nothing but errors.")
    var quiet = false

    /// The precisions of `--expert-variants`, checked.
    var variantPrecisions: [ExpertPrecision] {
        get throws { try expertVariants.map { try ExpertPrecision.parseVariants($0) } ?? [] }
    }

    func validate() throws {
        guard !sources.isEmpty else { throw ValidationError("give at least one source") }
        guard (1 ... 22).contains(level) else { throw ValidationError("--level must be 1 to 22") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
        guard batchMib >= 1 else { throw ValidationError("--batch-mib must be at least 1") }
    }

    func run() throws {
        // Checked here rather than in validate(), so a bad list is one line (no usage text).
        let precisions = try variantPrecisions
        let started = Date()
        let naming = try mapping.map { try ExpertNaming(mappingFile: $0) } ?? ExpertNaming()
        let checkpoint = try Checkpoint(paths: sources, naming: naming)
        let modelName = model ?? Self.defaultModelName(sources[0])
        let staged = try StagedStore(target: output)
        staged.armSignals()
        defer { staged.disarmSignals() }
        let summary: (raw: Int, stored: Int, variants: Int, variantBytes: Int)
        do {
            let written = try write(checkpoint, model: modelName, precisions: precisions, into: staged.staging)
            // The store is closed now: its file is as long as its map (MDB_WRITEMAP); cut
            // it to the pages in use before it is moved into place.
            try WeightStore.trimDataFile(at: staged.staging, to: written.usedBytes)
            summary = (written.raw, written.stored, written.variants, written.variantBytes)
            try staged.commit()
        } catch {
            staged.discard()
            throw error
        }
        if !quiet {
            let t = Date().timeIntervalSince(started)
            print(
                String(
                    format: "packed %d tensors of %@ (%d file%@) into %@ as model %@: %@ stored, %.3fx, in %.1fs",
                    checkpoint.tensors.count, formatBytes(summary.raw), checkpoint.files.count,
                    checkpoint.files.count == 1 ? "" : "s", output, modelName,
                    formatBytes(summary.stored), Double(summary.raw) / Double(max(summary.stored, 1)), t)
                    + (precisions.isEmpty
                        ? ""
                        : "; \(summary.variants) expert variants (\(precisions.map(\.name).joined(separator: ","))), "
                            + "\(formatBytes(summary.variantBytes)) stored"))
        }
    }

    /// The default model namespace: the source's file or folder name without extensions;
    /// for the generic Hugging Face names (`model.safetensors`, `model-00001-of-00002.safetensors`)
    /// the folder's name.
    static func defaultModelName(_ source: String) -> String {
        let url = URL(fileURLWithPath: source).standardizedFileURL
        var name = url.lastPathComponent
        for ext in [".safetensors.index.json", ".safetensors", ".gguf"] where name.hasSuffix(ext) {
            name.removeLast(ext.count)
        }
        if name == "model" || name.hasPrefix("model-0") {
            name = url.deletingLastPathComponent().lastPathComponent
        }
        return name.isEmpty || name == "/" ? WeightStore.defaultModel : name
    }

    /// Writes every tensor into a new store at `path`: records encoded on every core,
    /// committed in batches of about half of `batchMib` raw bytes, synced at the end;
    /// returns the bytes of its data file in use.
    ///
    /// The store is written through its map (``WeightStore/Options/writeMap``), sized for
    /// the whole checkpoint up front. A pipeline of two batches: while one batch is
    /// written (one thread copying into the page cache), the next is encoded on a thread
    /// of its own with its frames on every core, so neither the copy nor the compression
    /// waits for the other; together they hold about `batchMib` of raw bytes. Each
    /// batch's disk writes start as soon as it commits, and the checkpoint's pages leave
    /// this process once their tensor is written, so resident memory follows the batch
    /// size, not the model.
    private func write(_ ckpt: Checkpoint, model: String, precisions: [ExpertPrecision], into path: String) throws -> (
        raw: Int, stored: Int, variants: Int, variantBytes: Int, usedBytes: Int
    ) {
        var options = WeightStore.Options()
        options.writeMap = true
        // Every record fits its raw size plus a header page and a partial last page;
        // the trees and the free list take a little more. The map still grows if needed.
        let page = 4096
        // Variants take at most 81% of a bf16 part's bytes (q8_0 53%, q4_0 28%): count its bytes again.
        let estimate = ckpt.tensors.reduce(64 << 20) {
            $0 + ($1.byteCount + 2 * page) + (precisions.isEmpty || $1.expert == nil ? 0 : $1.byteCount + 4 * page)
        }
        options.initialMapSize = (estimate + (1 << 20) - 1) & ~((1 << 20) - 1)
        let store = try WeightStore.create(at: path, options: options)
        let workers = threads ?? System.activeProcessorCount
        var encode = store.encodeOptions
        encode.codec = codec
        encode.level = Int32(level)
        let total = ckpt.tensors.reduce(0) { $0 + $1.byteCount }
        let progress = Progress(label: "pack", total: total, quiet: quiet)
        let batches = Self.batches(ckpt.tensors.map(\.byteCount), bytes: max(1, (batchMib << 20) / 2))
        let bindings = try ckpt.tensors.map { try store.recordBinding(model: model, name: $0.name) }
        // One batch encoding on a thread of its own while the one before is written.
        func encoding(_ b: Int) -> Background<([EncodedRecord], [WeightStore.EncodedVariant])>? {
            guard b < batches.count else { return nil }
            let range = batches[b]
            for t in ckpt.tensors[range] { ckpt.prefetch(t) }
            let job = UncheckedSendable {
                let batch = Array(ckpt.tensors[range])
                // Variants first, while the source pages are mapped: encoding releases them.
                let variants =
                    precisions.isEmpty
                    ? []
                    : try Self.encodeVariants(
                        batch, precisions: precisions, store: store, model: model, ckpt: ckpt, options: encode,
                        threads: workers)
                let records = try Self.encode(
                    batch, bindings: Array(bindings[range]), ckpt: ckpt, options: encode, threads: workers)
                return (records, variants)
            }
            return Background { try job.value() }
        }
        // Raw payloads are copied from their files inside the kernel.
        var sources: [String: Int32] = [:]
        defer { for fd in sources.values { Posix.close(fd) } }
        for file in Set(ckpt.tensors.map(\.sourceFile)) { sources[file] = try Posix.openForReading(file) }
        let writeback = DispatchQueue(label: "wstore.pack.writeback")
        var raw = 0, stored = 0, variantCount = 0, variantBytes = 0
        var next = encoding(0)
        // A batch still encoding when a write fails is waited for: it reads the checkpoint.
        defer { _ = try? next?.value() }
        for (b, range) in batches.enumerated() {
            let (records, variants) = try next!.value()
            next = encoding(b + 1)
            let batch = ckpt.tensors[range]
            try store.write { w in
                for (t, r) in zip(batch, records) {
                    try ckpt.withBytes(of: t) { src in
                        _ = try w.putEncoded(
                            r, source: src, name: t.name, model: model, dtype: t.dtype, shape: t.shape,
                            expert: t.expert,
                            sourceFile: sources[t.sourceFile].map { ($0, t.sourceOffset, t.sourceFile) })
                    }
                    ckpt.release(t)
                }
                for v in variants { try w.putVariant(v, model: model) }
            }
            // On a thread of its own: starting writeback blocks while the disk's queue is
            // full, and the next batch goes on meanwhile.
            writeback.async { store.startWriteback() }
            let bytes = batch.reduce(0) { $0 + $1.byteCount }
            for r in records { stored += r.storedSize }
            for v in variants { variantBytes += v.record.storedSize }
            variantCount += variants.count
            raw += bytes
            progress.advance(bytes, note: "\(range.upperBound)/\(ckpt.tensors.count) tensors")
        }
        var info = ckpt.modelInfo
        info.name = model
        try store.setModelInfo(info)
        writeback.sync {}
        try store.sync()
        progress.finish()
        return (raw, stored, variantCount, variantBytes, store.usedBytes)
    }

    /// Consecutive ranges of tensors of about `bytes` raw bytes each (a larger tensor alone).
    static func batches(_ sizes: [Int], bytes: Int) -> [Range<Int>] {
        var out: [Range<Int>] = []
        var i = 0
        while i < sizes.count {
            var j = i, sum = 0
            while j < sizes.count, j == i || sum + sizes[j] <= bytes {
                sum += sizes[j]
                j += 1
            }
            out.append(i ..< j)
            i = j
        }
        return out
    }

    /// Quantizes and encodes the variants of the batch's expert parts, one part per thread; the
    /// source pages stay mapped for the records' encoding that follows.
    private static func encodeVariants(
        _ batch: [CheckpointTensor], precisions: [ExpertPrecision], store: WeightStore, model: String,
        ckpt: Checkpoint, options: EncodeOptions, threads: Int
    ) throws -> [WeightStore.EncodedVariant] {
        let parts = batch.filter { $0.expert != nil }
        var out = [[WeightStore.EncodedVariant]](repeating: [], count: parts.count)
        try out.withUnsafeMutableBufferPointer { slots in
            let slots = UncheckedSendable(slots)
            try parallelFor(parts.count, threads: threads) { n, _ in
                let t = parts[n]
                do {
                    slots.value[n] = try ckpt.withBytes(of: t) {
                        try store.encodeVariants(
                            $0, dtype: t.dtype, shape: t.shape, precisions: precisions, of: t.expert!, model: model,
                            options: options)
                    }
                } catch let e as WStoreError {
                    guard case .invalidArgument(let why) = e else { throw e }
                    throw WStoreError.invalidArgument("tensor \(t.name): \(why)")
                }
            }
        }
        return out.flatMap { $0 }
    }

    /// Encodes a batch: large tensors one at a time with their frames on every thread,
    /// small ones side by side, one per thread. Each tensor's pages leave this process
    /// once it is encoded (the page cache keeps them for the write).
    private static func encode(
        _ batch: [CheckpointTensor], bindings: [UInt64], ckpt: Checkpoint, options: EncodeOptions,
        threads: Int
    ) throws -> [EncodedRecord] {
        var out = [EncodedRecord?](repeating: nil, count: batch.count)
        let large = options.frameSize * threads
        var small: [Int] = []
        for (k, t) in batch.enumerated() {
            if t.byteCount >= large {
                var o = options
                o.threads = threads
                out[k] = try ckpt.withBytes(of: t) {
                    try RecordEncoder.encode($0, dtype: t.dtype, shape: t.shape, binding: bindings[k], options: o)
                }
                ckpt.release(t)
            } else {
                small.append(k)
            }
        }
        try out.withUnsafeMutableBufferPointer { slots in
            let slots = UncheckedSendable(slots)
            try parallelFor(small.count, threads: threads) { n, _ in
                let t = batch[small[n]]
                let r = try ckpt.withBytes(of: t) {
                    try RecordEncoder.encode(
                        $0, dtype: t.dtype, shape: t.shape, binding: bindings[small[n]], options: options)
                }
                ckpt.release(t)
                slots.value[small[n]] = r
            }
        }
        return out.map { $0! }
    }
}
