import ArgumentParser
import Foundation
import Histogram
import WStoreCore
import WStoreFormats
import WeightStore

/// `wstore bench load`: how fast tensors come out of a store, beside memcpy and a
/// plain read of the same tensor from its safetensors file, measured in one run.
struct BenchLoad: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "load",
        abstract: "Load-path latency and throughput of a store beside memcpy and safetensors reads.")

    @Argument(help: "The store directory.") var store: String
    @Option(help: "Only tensors whose name matches this glob (fnmatch).") var tensors: String?
    @Flag(help: "Measure whole experts (all parts of one expert per access).") var experts = false
    @Option(help: "Model namespace (default: the store's only or first model).") var model: String?
    @Option(help: "Threads for the parallel materialize.") var threads = defaultThreadCount
    @Flag(help: "Drop the files' pages from memory before every access.") var cold = false
    @Option(help: "The safetensors file the store was packed from: adds pread and mmap baselines.") var source: String?
    @Option(help: "Accesses per item and path (warm runs).") var iterations = 5
    @Option(help: "At most this many items (tensors or experts), largest first.") var limit = 64
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        guard !(experts && tensors != nil) else { throw ValidationError("--tensors and --experts exclude each other") }
        guard threads >= 1, iterations >= 1, limit >= 1 else {
            throw ValidationError("--threads, --iterations and --limit must be ≥ 1")
        }
    }

    /// One thing loaded per access: a tensor, or every part of an expert.
    struct Item {
        var label: String
        var names: [String]
        var sizes: [Int]
        var raw: Bool
        var bytes: Int { sizes.reduce(0, +) }
    }

    /// Latencies (ns) and totals of one load path.
    struct PathResult {
        var name: String
        var histogram = Histogram<UInt64>(
            highestTrackableValue: 600_000_000_000, numberOfSignificantValueDigits: .three)
        var bytes = 0
        var seconds = 0.0
        var count: UInt64 { histogram.totalCount }
        var gbps: Double { seconds > 0 ? Double(bytes) / seconds / 1e9 : 0 }

        init(_ name: String) { self.name = name }

        mutating func record(bytes: Int, _ body: () throws -> Void) rethrows {
            let t0 = ContinuousClock.now
            try body()
            add(bytes: bytes, since: t0)
        }

        /// Records one access of `bytes` that started at `t0` and ends now.
        mutating func add(bytes: Int, since t0: ContinuousClock.Instant) {
            let d = ContinuousClock.now - t0
            let ns = UInt64(d.components.seconds) * 1_000_000_000 + UInt64(d.components.attoseconds / 1_000_000_000)
            _ = histogram.record(max(ns, 1))
            self.bytes += bytes
            seconds += Double(ns) / 1e9
        }
    }

    func run() throws {
        let store = try WeightStore.open(at: self.store)
        guard let model = try model ?? store.models().first else {
            throw ValidationError("\(self.store) holds no model")
        }
        let items = try selectItems(store, model: model)
        guard !items.isEmpty else { throw ValidationError("no tensors selected in model \(model)") }
        let sourceFile = try source.map { try SafetensorsFile(path: $0) }
        let reader = try source.map { try ReadOnlyFile(path: $0) }
        let reps = cold ? 1 : iterations
        let maxBytes = items.map(\.bytes).max()!
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(maxBytes, 1), alignment: 64)
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: max(maxBytes, 1), alignment: 64)
        defer {
            buffer.deallocate()
            scratch.deallocate()
        }
        buffer.initializeMemory(as: UInt8.self, repeating: 1)  // fault the pages in once, outside the timings
        scratch.initializeMemory(as: UInt8.self, repeating: 1)

        func coldStart(_ item: Item) throws {
            guard cold else { return }
            for n in item.names { try store.evictFromMemory(n, model: model) }
        }

        var results: [PathResult] = []
        let rawItems = items.filter(\.raw)
        if !cold {
            // Warm means in memory: one untimed pass brings every item's pages in first.
            try store.withSnapshot { s in
                for item in items {
                    var at = 0
                    for (n, size) in zip(item.names, item.sizes) {
                        try s.read(
                            n, model: model, into: UnsafeMutableRawBufferPointer(rebasing: buffer[at ..< at + size]))
                        at += size
                    }
                }
            }
            if let sourceFile {
                for item in items {
                    for n in item.names {
                        if let t = sourceFile.tensor(named: n) { sourceFile.withBytes(of: t) { touchPages($0) } }
                    }
                }
            }
        }

        // Zero-copy: lend the bytes; first only the lookup, then (cold only) touching every
        // page. Warm, the pages are already mapped and touching them measures nothing.
        if !rawItems.isEmpty {
            var lookup = PathResult("zero-copy lookup")
            var touch = PathResult("zero-copy, touch every page")
            for item in rawItems {
                for _ in 0 ..< (cold ? 1 : max(reps, 200)) {
                    try coldStart(item)
                    try lookup.record(bytes: 0) {
                        try store.withSnapshot { s in
                            for n in item.names {
                                try s.withTensor(n, model: model) { b, _ in blackHole(b.baseAddress) }
                            }
                        }
                    }
                }
                for _ in 0 ..< (cold ? reps : 0) {
                    try coldStart(item)
                    try touch.record(bytes: item.bytes) {
                        try store.withSnapshot { s in
                            for n in item.names { try s.withTensor(n, model: model) { b, _ in touchPages(b) } }
                        }
                    }
                }
            }
            results += cold ? [lookup, touch] : [lookup]
        }

        // Materialize: a private copy (raw) or a decode (compressed), checksum checked;
        // and, for raw records, the plain copy without the checksum.
        // From the map (faults, after asking for the record's range when cold) and from the
        // data file (pread at the record's offset).
        var variants = Array(Set([1, threads])).sorted().flatMap { t in
            [ReadPath.map, .file].map { (threads: t, verify: true, path: $0, items: items) }
        }
        if !rawItems.isEmpty {
            variants += [ReadPath.map, .file].map { (threads: 1, verify: false, path: $0, items: rawItems) }
        }
        for v in variants {
            let from = v.path == .map ? "map" : "file"
            let label =
                v.verify
                ? "materialize (\(from)), \(v.threads) thread\(v.threads == 1 ? "" : "s")"
                : "materialize raw (\(from)), no checksum"
            var path = PathResult(label)
            for item in v.items {
                for _ in 0 ..< reps {
                    try coldStart(item)
                    try path.record(bytes: item.bytes) {
                        try store.withSnapshot { s in
                            // As the residency manager loads an expert: every part asked for first.
                            try s.prepareToRead(item.names, model: model)
                            var at = 0
                            for (n, size) in zip(item.names, item.sizes) {
                                try s.read(
                                    n, model: model,
                                    into: UnsafeMutableRawBufferPointer(rebasing: buffer[at ..< at + size]),
                                    threads: v.threads, verify: v.verify, path: v.path)
                                at += size
                            }
                        }
                    }
                }
            }
            results.append(path)
        }

        // Baselines on the same bytes.
        var memcpyPath = PathResult("memcpy (baseline)")
        for item in items {
            for _ in 0 ..< reps {
                memcpyPath.record(bytes: item.bytes) {
                    buffer.baseAddress!.copyMemory(from: scratch.baseAddress!, byteCount: item.bytes)
                }
            }
        }
        results.append(memcpyPath)

        // The same copy from the store's mapped pages, timed alone (no lookup, no
        // checksum): what a raw materialize costs at best, page-table walks included.
        if !rawItems.isEmpty {
            var mapped = PathResult("memcpy from the map (baseline)")
            for item in rawItems {
                for _ in 0 ..< reps {
                    try coldStart(item)
                    try store.withSnapshot { s in
                        let t0 = ContinuousClock.now
                        var at = 0
                        for n in item.names {
                            try s.withTensor(n, model: model) { b, _ in
                                (buffer.baseAddress! + at).copyMemory(from: b.baseAddress!, byteCount: b.count)
                                at += b.count
                            }
                        }
                        mapped.add(bytes: item.bytes, since: t0)
                    }
                }
            }
            results.append(mapped)
        }

        var preadIndex: Int?
        if let sourceFile, let reader {
            let matched = items.filter { $0.names.allSatisfy { sourceFile.tensor(named: $0) != nil } }
            var pread = PathResult("safetensors pread (baseline)")
            var mapped = PathResult("safetensors mmap + copy")
            for item in matched {
                let ranges = item.names.map { sourceFile.tensor(named: $0)! }
                for _ in 0 ..< reps {
                    if cold { reader.dropCache() }
                    var ok = true
                    try pread.record(bytes: item.bytes) {
                        var at = 0
                        for t in ranges {
                            ok =
                                try reader.pread(
                                    into: UnsafeMutableRawBufferPointer(rebasing: buffer[at ..< at + t.byteCount]),
                                    at: t.byteRange.lowerBound) && ok
                            at += t.byteCount
                        }
                    }
                    guard ok else { throw ValidationError("\(reader.path): short read") }
                    if cold {
                        for t in ranges { sourceFile.withBytes(of: t) { PageCache.unmapPages($0) } }
                        reader.dropCache()
                    }
                    mapped.record(bytes: item.bytes) {
                        var at = 0
                        for t in ranges {
                            sourceFile.withBytes(of: t) {
                                (buffer.baseAddress! + at).copyMemory(from: $0.baseAddress!, byteCount: $0.count)
                            }
                            at += t.byteCount
                        }
                    }
                }
            }
            if pread.count > 0 {
                preadIndex = results.count
                results += [pread, mapped]
            }
        }
        try report(results, items: items, model: model, memcpy: memcpyPath, pread: preadIndex.map { results[$0] })
    }

    private func selectItems(_ store: WeightStore, model: String) throws -> [Item] {
        try store.withSnapshot { s in
            var items: [Item] = []
            if experts {
                for e in try s.experts(model: model) {
                    let names = e.parts.keys.sorted().map { e.parts[$0]! }
                    let infos = try names.map { try s.info($0, model: model) }
                    items.append(
                        Item(
                            label: "layer \(e.layer) expert \(e.expert)", names: names,
                            sizes: infos.map(\.rawSize), raw: infos.allSatisfy(\.isRaw)))
                }
            } else {
                for t in try s.tensors(model: model) where tensors.map({ Posix.matches(t.name, glob: $0) }) ?? true {
                    items.append(Item(label: t.name, names: [t.name], sizes: [t.rawSize], raw: t.isRaw))
                }
            }
            return Array(items.sorted { $0.bytes > $1.bytes }.prefix(limit))
        }
    }

    private func report(_ results: [PathResult], items: [Item], model: String, memcpy: PathResult, pread: PathResult?)
        throws
    {
        func us(_ ns: UInt64) -> Double { Double(ns) / 1000 }
        if json {
            struct Path: Encodable {
                var path: String, accesses: UInt64, bytes: Int, p50_us: Double, p99_us: Double, gbps: Double
                var vs_memcpy: Double?, vs_safetensors_pread: Double?
            }
            struct Report: Encodable {
                var store: String, model: String, items: Int, unit: String, bytes_per_pass: Int, cold: Bool,
                    threads: Int
                var paths: [Path]
            }
            let paths = results.map { r in
                Path(
                    path: r.name, accesses: r.count, bytes: r.bytes, p50_us: us(r.histogram.valueAtPercentile(50)),
                    p99_us: us(r.histogram.valueAtPercentile(99)), gbps: r.gbps,
                    vs_memcpy: r.bytes > 0 ? r.gbps / memcpy.gbps : nil,
                    vs_safetensors_pread: pread.flatMap { r.bytes > 0 ? r.gbps / $0.gbps : nil })
            }
            try JSONOutput.print(
                Report(
                    store: store, model: model, items: items.count, unit: experts ? "expert" : "tensor",
                    bytes_per_pass: items.reduce(0) { $0 + $1.bytes }, cold: cold, threads: threads,
                    paths: paths))
            return
        }
        let raw = items.filter(\.raw).count
        print(
            "\(store) model \(model): \(items.count) \(experts ? "experts" : "tensors") (\(raw) raw), "
                + "\(formatBytes(items.reduce(0) { $0 + $1.bytes })) per pass, \(cold ? "cold (pages dropped before each access)" : "warm")"
        )
        let rows = results.map { r -> [String] in
            [
                r.name, "\(r.count)", String(format: "%.2f", us(r.histogram.valueAtPercentile(50))),
                String(format: "%.2f", us(r.histogram.valueAtPercentile(99))),
                r.bytes > 0 ? String(format: "%.2f", r.gbps) : "—",
                r.bytes > 0 ? String(format: "%.2f", r.gbps / memcpy.gbps) : "—",
                pread.map { p in r.bytes > 0 ? String(format: "%.2f", r.gbps / p.gbps) : "—" } ?? "—",
            ]
        }
        print(TextTable(["path", "accesses", "p50 µs", "p99 µs", "GB/s", "× memcpy", "× st pread"], rows).render())
        if !cold && results.contains(where: { $0.name == "zero-copy lookup" }) {
            print("zero-copy warm is the lookup alone: the bytes are already mapped, so touching them is not shown")
        }
    }
}

/// Reads one byte of every page of `bytes`, so each page is really mapped in.
@inline(never)
func touchPages(_ bytes: UnsafeRawBufferPointer) {
    var acc: UInt8 = 0
    var i = 0
    while i < bytes.count {
        acc &+= bytes[i]
        i += 4096
    }
    blackHole(acc)
}

/// Keeps the optimizer from dropping a computation.
@inline(never)
func blackHole<T>(_ value: T) { withExtendedLifetime(value) {} }
