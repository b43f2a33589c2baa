import ArgumentParser
import Dispatch
import Foundation
import Histogram
import WStoreCore
import WStoreReplay
import WeightStore

/// `wstore bench cache`: replays a routing trace against every residency policy, with
/// Belady's MIN beside every figure.
struct BenchCache: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cache",
        abstract: "Replay a routing trace against residency policies, Belady's MIN beside each figure.",
        discussion: """
            Without --store the replay is a pure simulation of equal-sized experts. With --store, \
            misses really load from the store through a ResidencyManager, and the report adds \
            stall time p50/p99 and the cost of acquiring a resident expert.
            """)

    @Option(help: "The routing trace (format-spec/ROUTING-TRACE.md).") var trace: String
    @Option(help: "Experts that fit: a count or a percentage of all experts such as 50%; several as 25%,50%,75%.")
    var capacity: String?
    @Option(help: "Bytes that fit (needs expert_bytes in the trace header, or --store).") var budget: Int?
    @Option(
        help:
            "A policy name (\(ResidencyPolicyKind.allCases.map(\.rawValue).joined(separator: ", "))), several as lru,forecast, or all."
    )
    var policy = "all"
    @Flag(help: "Issue the trace's predictions as prefetch hints one layer ahead.") var prefetch = false
    @Flag(help: "Keep the trace's router scores from the policies (by default they hear them after each layer).")
    var noRouterScores = false
    @Option(help: "Replay through a ResidencyManager over this store (real loads).") var store: String?
    @Option(help: "The model namespace in --store (default: the trace's model, else the store's only model).")
    var model: String?
    @Option(help: "With --store: microseconds of compute to spin per layer, which prefetches can hide.")
    var layerTimeUs = 0
    @Option(
        help:
            "With --store: where loads read records from (\(ReadPath.allCases.map(\.rawValue).joined(separator: ", ")))."
    )
    var loadPath: ReadPath = .fileDropCache
    @Option(
        name: .customLong("cache-aware-routing"),
        help:
            "Relative tolerances such as 0.1,0.2: also replay lru and the default policy with resident-aware routing (traces with scores)."
    )
    var cacheAwareRouting: String?
    @Option(
        help:
            "With --store: the precisions engines ask for, several as exact,mixed: exact (lossless only), mixed (at least q4_0, upgraded to exact in the background when the policy calls the expert hot), or q8_0 / q4_0 (at least that precision, never upgraded)."
    )
    var precision = "exact"
    @Flag(help: "Print one JSON object.") var json = false

    func validate() throws {
        guard (capacity == nil) != (budget == nil) else {
            throw ValidationError("give exactly one of --capacity and --budget")
        }
        if policy != "all",
            let bad = policy.split(separator: ",").first(where: { ResidencyPolicyKind(rawValue: String($0)) == nil })
        {
            throw ValidationError(
                "unknown policy \(bad); choose one of \(ResidencyPolicyKind.allCases.map(\.rawValue).joined(separator: ", ")) or all"
            )
        }
        if layerTimeUs < 0 { throw ValidationError("--layer-time-us must not be negative") }
        let requests = try precisionRequests()
        if store == nil, requests.contains(where: { $0.request != .exact }) {
            throw ValidationError("--precision other than exact needs --store (a store packed with --expert-variants)")
        }
        if cacheAwareRouting != nil {
            guard store == nil else {
                throw ValidationError("--cache-aware-routing replays a simulation; drop --store")
            }
            _ = try tolerances()
        }
    }

    /// The `--precision` list: each name with the request it replays.
    func precisionRequests() throws -> [(name: String, request: PrecisionRequest)] {
        var out: [(name: String, request: PrecisionRequest)] = []
        for raw in precision.split(separator: ",", omittingEmptySubsequences: false) {
            let name = raw.trimmingCharacters(in: .whitespaces).lowercased()
            let request: PrecisionRequest
            switch name {
            case "exact": request = .exact
            case "mixed": request = .atLeast(.q4_0, upgrade: true)
            default:
                guard let p = ExpertPrecision(name: name), p != .exact else {
                    throw ValidationError(
                        "unknown --precision \(name.isEmpty ? "(empty)" : name); use exact, mixed, q8_0 or q4_0, comma-separated")
                }
                request = .atLeast(p)
            }
            if !out.contains(where: { $0.name == name }) { out.append((name, request)) }
        }
        return out
    }

    /// The `--cache-aware-routing` tolerances.
    func tolerances() throws -> [Double] {
        guard let cacheAwareRouting else { return [] }
        let values = cacheAwareRouting.split(separator: ",").map { Double($0.trimmingCharacters(in: .whitespaces)) }
        guard !values.isEmpty, values.allSatisfy({ $0 != nil && (0 ... 1).contains($0!) }) else {
            throw ValidationError(
                "--cache-aware-routing takes tolerances in 0...1 such as 0.1,0.2, got \(cacheAwareRouting)")
        }
        return values.map { $0! }
    }

    func run() throws {
        let output = try makeOutput()
        if json {
            try JSONOutput.print(output)
        } else {
            printHuman(output)
        }
    }

    /// Replays the trace at every capacity asked for and gathers every figure.
    func makeOutput() throws -> BenchCacheOutput {
        let trace = try RoutingTrace.load(path: self.trace)
        let texts = capacity.map { $0.split(separator: ",").map(String.init) } ?? [""]
        var runs: [Report] = []
        for text in texts { runs.append(try makeReport(trace, capacityText: text)) }
        let stats = RoutingTraceStats(trace)
        var routing: [RoutingRow] = []
        let tols = try tolerances()
        if !tols.isEmpty {
            guard trace.hasScores else {
                throw WStoreError.invalidArgument(
                    "--cache-aware-routing needs router scores, and trace \(self.trace) has none")
            }
            let g = trace.header.geometry
            for run in runs {
                for kind in [ResidencyPolicyKind.lru, .default] {
                    for tol in [0] + tols {
                        let r = ResidencySimulator.run(
                            trace, policy: kind.make(geometry: g, capacity: run.capacity),
                            capacity: run.capacity, prefetch: prefetch, cacheAwareRouting: tol,
                            scores: !noRouterScores)
                        routing.append(
                            RoutingRow(
                                capacity: run.capacity, residency: run.residency, policy: kind.rawValue,
                                tolerance: tol, hit_rate: r.hitRate, loads_per_access: r.loadsPerAccess,
                                swapped: Double(r.swappedPicks) / Double(max(1, r.routedPicks)),
                                mass_given_up: r.massGivenUp / Double(max(1, r.routedGroups))))
                    }
                }
            }
        }
        return BenchCacheOutput(
            runs: runs, summary: summary(runs),
            hint_accuracy: trace.hasPredictions ? stats.accuracy : nil,
            cache_aware_routing: routing.isEmpty ? nil : routing)
    }

    /// The report of the first capacity asked for.
    func makeReport() throws -> Report {
        try makeOutput().runs[0]
    }

    /// Which policy wins at each capacity, and how the default stands beside the baselines.
    func summary(_ runs: [Report]) -> [String] {
        var lines: [String] = []
        var wins: [String] = []
        for r in runs {
            guard
                let best = r.policies.max(by: {
                    ($0.hit_rate, -$0.loads_per_access) < ($1.hit_rate, -$1.loads_per_access)
                })
            else { continue }
            wins.append(
                "\(CacheBenchFormat.pct(r.residency)): \(best.label) \(CacheBenchFormat.pct(best.hit_rate)) at \(String(format: "%.3f", best.loads_per_access)) loads/access"
            )
        }
        if !wins.isEmpty {
            lines.append("wins (hit rate" + (prefetch ? ", prefetch on" : "") + "): " + wins.joined(separator: "; "))
        }
        let baselines: Set = ["lru", "lru-per-layer", "lfu"]
        var beside: [String] = []
        for r in runs {
            // Exact-only rows: the policies compared at equal expert sizes.
            let exact = r.policies.filter { ($0.precision ?? "exact") == "exact" }
            guard let d = exact.first(where: { $0.policy == ResidencyPolicyKind.default.rawValue }),
                let b = exact.filter({ baselines.contains($0.policy) }).max(by: { $0.hit_rate < $1.hit_rate })
            else { continue }
            beside.append(
                CacheBenchFormat.pct(r.residency) + String(format: " %+.1f points vs ", (d.hit_rate - b.hit_rate) * 100)
                    + b.policy
                    + String(format: " (%.3f vs %.3f loads/access)", d.loads_per_access, b.loads_per_access))
        }
        var fewer: [String] = []
        for r in runs {
            for exact in r.policies where exact.precision == "exact" {
                guard let base = exact.bytes_read_per_access else { continue }
                for p in r.policies where p.policy == exact.policy && p.precision != "exact" {
                    guard let b = p.bytes_read_per_access else { continue }
                    fewer.append(
                        CacheBenchFormat.pct(r.residency) + " \(p.label): "
                            + (b > 0 ? String(format: "%.2fx", base / b) : "no loads")
                            + " fewer bytes read from the store per access than exact (\(formatBytes(Int(b.rounded()))) vs \(formatBytes(Int(base.rounded())))), hit rate \(CacheBenchFormat.pct(p.hit_rate)) vs \(CacheBenchFormat.pct(exact.hit_rate))"
                    )
                }
            }
        }
        if !fewer.isEmpty { lines.append("precision at the same byte budget: " + fewer.joined(separator: "; ")) }
        if !beside.isEmpty {
            lines.append(
                "default (\(ResidencyPolicyKind.default.rawValue)) beside the best of lru, lru-per-layer, lfu: "
                    + beside.joined(separator: "; "))
        }
        return lines
    }

    /// Replays the trace at one capacity.
    func makeReport(_ trace: RoutingTrace, capacityText: String) throws -> Report {
        let g = trace.header.geometry
        let kinds =
            policy == "all"
            ? ResidencyPolicyKind.allCases
            : policy.split(separator: ",").map { ResidencyPolicyKind(rawValue: String($0))! }
        let opened = try store.map { try WeightStore.open(at: $0) }
        let modelName = try opened.map { try resolveModel($0, trace: trace) }
        let expertBytes =
            try opened.map {
                try ResidencyManager.expertLayouts(store: $0, model: modelName!).map(\.layout.totalBytes).max()!
            }
            ?? trace.header.expertBytes
        let cap = try resolveCapacity(capacityText, total: g.count, expertBytes: expertBytes)
        if prefetch && !trace.hasPredictions {
            throw WStoreError.invalidArgument("--prefetch needs predictions, and trace \(self.trace) has none")
        }
        let oracle = BeladyMIN.run(trace, capacity: cap)
        var rows: [PolicyReport] = []
        for kind in kinds {
            if let opened {
                for (name, request) in try precisionRequests() {
                    rows.append(
                        try replayStore(
                            trace, kind: kind, store: opened, model: modelName!, capacity: cap,
                            expertBytes: expertBytes!, precision: (name, request)))
                }
            } else {
                let r = ResidencySimulator.run(
                    trace, policy: kind.make(geometry: g, capacity: cap), capacity: cap, prefetch: prefetch,
                    scores: !noRouterScores)
                rows.append(PolicyReport(r))
            }
        }
        let lru = rows.first { $0.policy == "lru" && ($0.precision ?? "exact") == "exact" }
        for i in rows.indices {
            // Without prefetch MIN bounds every policy, so the share of the LRU→MIN gap closed is meaningful.
            // Low-bit copies take less room than MIN's equal-sized experts: no gap for them.
            if !prefetch, let lru, oracle.hitRate - lru.hit_rate > 1e-12, (rows[i].precision ?? "exact") == "exact" {
                rows[i].gap_closed = (rows[i].hit_rate - lru.hit_rate) / (oracle.hitRate - lru.hit_rate)
            }
        }
        return Report(
            trace: self.trace, note: trace.header.note, layers: g.layers, experts: g.experts, top_k: g.topK,
            tokens: trace.tokenCount, accesses: trace.accessCount, capacity: cap,
            residency: Double(cap) / Double(g.count), prefetch: prefetch, store: store,
            min_hit_rate: oracle.hitRate, min_loads_per_access: oracle.loadsPerAccess,
            min_per_layer: oracle.perLayerHitRate, min_resident_share: oracle.residentShare, policies: rows)
    }

    private func resolveModel(_ store: WeightStore, trace: RoutingTrace) throws -> String {
        if let model { return model }
        let models = try store.models().filter { !((try? store.experts(model: $0).isEmpty) ?? true) }
        if let m = trace.header.model, models.contains(m) { return m }
        guard models.count == 1 else {
            throw WStoreError.invalidArgument(
                models.isEmpty
                    ? "store \(self.store!) has no indexed experts"
                    : "store \(self.store!) has several models with experts (\(models.joined(separator: ", "))); name one with --model"
            )
        }
        return models[0]
    }

    private func resolveCapacity(_ capacityText: String, total: Int, expertBytes: Int?) throws -> Int {
        let cap: Int
        if let budget {
            guard let expertBytes, expertBytes > 0 else {
                throw WStoreError.invalidArgument(
                    "--budget needs the expert size: give --store, or a trace whose header has expert_bytes")
            }
            cap = budget / expertBytes
        } else {
            let text = capacityText.trimmingCharacters(in: .whitespaces)
            if text.hasSuffix("%"), let p = Double(text.dropLast()), p > 0, p <= 100 {
                cap = Int((Double(total) * p / 100).rounded())
            } else if let n = Int(text) {
                cap = n
            } else {
                throw WStoreError.invalidArgument("--capacity takes a count or a percentage such as 50%, got \(text)")
            }
        }
        guard cap >= 1 else {
            throw WStoreError.invalidArgument("the budget holds no expert; raise --capacity or --budget")
        }
        return min(cap, total)
    }

    /// Replays through a real ResidencyManager: every access is acquire + release, on one thread.
    private func replayStore(
        _ trace: RoutingTrace, kind: ResidencyPolicyKind, store: WeightStore, model: String,
        capacity: Int, expertBytes: Int, precision: (name: String, request: PrecisionRequest)
    ) throws -> PolicyReport {
        var options = ResidencyManager.Options()
        options.policy = kind
        options.loadPath = loadPath
        let budgetBytes = budget ?? capacity * expertBytes
        // Memory beyond the budget: what the process grew by, plus the store's pages in
        // the page cache, less the budget; sampled as the replay runs, from a cold start.
        let dataFile = store.path + "/data.mdb"
        PageCache.drop(path: dataFile)
        let rss0 = PageCache.residentSetBytes()
        var memory = MemorySample()
        func sample() {
            let grown = PageCache.residentSetBytes() - rss0
            let cached = PageCache.cachedBytes(path: dataFile) ?? 0
            memory.rssGrowth = max(memory.rssGrowth, grown)
            memory.pageCache = max(memory.pageCache, cached)
            memory.beyond = max(memory.beyond, grown + cached - budgetBytes)
        }
        let m = try ResidencyManager(store: store, model: model, budget: budgetBytes, options: options)
        let g = trace.header.geometry
        guard g.layers <= m.geometry.layers, g.experts <= m.geometry.experts else {
            throw WStoreError.invalidArgument(
                "trace routes over \(g.layers) layers × \(g.experts) experts, but model \(model) in the store has \(m.geometry.layers) × \(m.geometry.experts)"
            )
        }
        var stalls = Histogram<UInt64>(highestTrackableValue: 60_000_000_000)
        var hitTimes = Histogram<UInt64>(highestTrackableValue: 60_000_000_000)
        var timer = Histogram<UInt64>(highestTrackableValue: 60_000_000_000)
        func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }
        func spin(_ us: Int) {
            guard us > 0 else { return }
            let end = now() + UInt64(us) * 1000
            while now() < end {}
        }
        for t in 0 ..< trace.tokenCount {
            if t % 32 == 0 { sample() }
            if prefetch, let p = trace.predicted(token: t, layer: 0) {
                m.prefetch(layer: 0, experts: p.map { Int($0) })
            }
            for l in 0 ..< g.layers {
                for e in trace.experts(token: t, layer: l) {
                    let wasResident = m.isResident(layer: l, expert: Int(e), precision: precision.request)
                    let t0 = now()
                    let h = try m.acquire(layer: l, expert: Int(e), precision: precision.request)
                    let t1 = now()
                    h.release()
                    let t2 = now()
                    _ = now()
                    let t3 = now()
                    _ = (wasResident ? hitTimes.record(t1 - t0) : stalls.record(t1 - t0))
                    _ = timer.record(t3 - t2)
                }
                if !noRouterScores, let (c, p) = trace.scores(token: t, layer: l) {
                    m.observe(layer: l, experts: c.map { Int($0) }, probabilities: p.map { Double($0) })
                }
                if prefetch && l + 1 < g.layers, let p = trace.predicted(token: t, layer: l + 1) {
                    m.prefetch(layer: l + 1, experts: p.map { Int($0) })
                }
                spin(layerTimeUs)
            }
        }
        sample()
        m.waitForBackgroundLoads()
        let s = m.stats()
        // Hot loop: acquire + release of resident experts, beside one atomic load (isResident) per step.
        var resident: [(Int, Int)] = []
        for l in 0 ..< g.layers {
            for e in 0 ..< g.experts where m.isResident(layer: l, expert: e, precision: precision.request) {
                resident.append((l, e))
            }
        }
        var hotNs: Double?, baseNs: Double?
        if !resident.isEmpty {
            let n = 200_000
            var sink = 0
            let b0 = now()
            for i in 0 ..< n {
                let (l, e) = resident[i % resident.count]
                if m.isResident(layer: l, expert: e) { sink &+= 1 }
            }
            let b1 = now()
            for i in 0 ..< n {
                let (l, e) = resident[i % resident.count]
                let h = try m.acquire(layer: l, expert: e, precision: precision.request)
                sink &+= h.expert
                h.release()
            }
            let b2 = now()
            baseNs = Double(b1 - b0) / Double(n)
            hotNs = Double(b2 - b1) / Double(n)
            if sink == -1 { print("") }
        }
        var report = PolicyReport(ReplayResult(stats: s, policy: kind.rawValue, layers: g.layers))
        report.precision = precision.name
        report.bytes_loaded_per_access = Double(s.total.bytesLoaded) / Double(max(1, trace.accessCount))
        report.bytes_read_per_access = Double(s.total.bytesRead) / Double(max(1, trace.accessCount))
        report.low_precision_hit_share = Double(s.total.lowPrecisionHits) / Double(max(1, s.total.demandHits))
        report.upgrade_loads = s.upgradeLoads
        report.low_precision_loads = s.lowPrecisionLoads
        report.hot_acquire_release_ns = hotNs
        report.hot_baseline_ns = baseNs
        report.stall_p50_us = stalls.totalCount > 0 ? Double(stalls.valueAtPercentile(50)) / 1000 : 0
        report.stall_p99_us = stalls.totalCount > 0 ? Double(stalls.valueAtPercentile(99)) / 1000 : 0
        report.resident_acquire_p50_ns = hitTimes.totalCount > 0 ? Double(hitTimes.valueAtPercentile(50)) : nil
        report.timer_p50_ns = Double(timer.valueAtPercentile(50))
        report.coalesced_waits = s.coalescedWaits
        report.budget_bytes = budgetBytes
        report.rss_growth_bytes = memory.rssGrowth
        report.store_page_cache_bytes = memory.pageCache
        report.beyond_budget_bytes = max(0, memory.beyond)
        return report
    }

    private func printHuman(_ output: BenchCacheOutput) {
        for (i, r) in output.runs.enumerated() {
            if i > 0 { print("") }
            printHuman(r, hintAccuracy: output.hint_accuracy)
        }
        if let routing = output.cache_aware_routing {
            print("")
            print(
                "cache-aware routing (a non-resident pick, never the top-1, swapped for a resident candidate within the tolerance):"
            )
            var rows = [
                [
                    "capacity", "policy", "tolerance", "hit rate", "loads/access", "picks swapped",
                    "probability given up",
                ]
            ]
            for row in routing {
                rows.append([
                    CacheBenchFormat.pct(row.residency), row.policy, String(format: "%.2f", row.tolerance),
                    CacheBenchFormat.pct(row.hit_rate), String(format: "%.3f", row.loads_per_access),
                    CacheBenchFormat.pct(row.swapped), String(format: "%.4f", row.mass_given_up),
                ])
            }
            CacheBenchFormat.table(rows)
        }
        print("")
        for line in output.summary { print(line) }
    }

    private func printHuman(_ r: Report, hintAccuracy: [Double?]?) {
        print(
            "trace \(r.trace): \(r.layers) layers × \(r.experts) experts, top-\(r.top_k); \(r.tokens) tokens, \(r.accesses) accesses"
        )
        if let note = r.note { print("  \(note)") }
        print(
            "capacity \(r.capacity) of \(r.layers * r.experts) experts (\(CacheBenchFormat.pct(r.residency)) resident); prefetch \(r.prefetch ? "on" : "off")"
                + (r.store.map { "; real loads from \($0)" } ?? "; simulated"))
        print("")
        var head = [
            "policy", "hit rate", "MIN", r.prefetch ? "demand misses" : "gap closed", "loads/access",
            "MIN loads/access",
            "prefetch hits", "wasted prefetches",
        ]
        let store = r.store != nil
        if store {
            head += [
                "stall p50", "stall p99", "resident acquire p50", "timer p50", "hot acquire+release", "hot baseline",
                "read/access", "decoded/access", "low-bit hits", "upgrades",
            ]
        }
        var rows = [head]
        for p in r.policies {
            var row = [
                p.label, CacheBenchFormat.pct(p.hit_rate), CacheBenchFormat.pct(r.min_hit_rate),
                r.prefetch ? String(p.demand_loads) : (p.gap_closed.map(CacheBenchFormat.pct) ?? "-"),
                String(format: "%.3f", p.loads_per_access),
                String(format: "%.3f", r.min_loads_per_access), String(p.prefetch_hits), String(p.wasted_prefetches),
            ]
            if store {
                row += [
                    String(format: "%.1f µs", p.stall_p50_us ?? 0), String(format: "%.1f µs", p.stall_p99_us ?? 0),
                    p.resident_acquire_p50_ns.map { String(format: "%.0f ns", $0) } ?? "-",
                    String(format: "%.0f ns", p.timer_p50_ns ?? 0),
                    p.hot_acquire_release_ns.map { String(format: "%.0f ns", $0) } ?? "-",
                    p.hot_baseline_ns.map { String(format: "%.1f ns", $0) } ?? "-",
                    p.bytes_read_per_access.map { formatBytes(Int($0.rounded())) } ?? "-",
                    p.bytes_loaded_per_access.map { formatBytes(Int($0.rounded())) } ?? "-",
                    p.low_precision_hit_share.map(CacheBenchFormat.pct) ?? "-", p.upgrade_loads.map(String.init) ?? "-",
                ]
            }
            rows.append(row)
        }
        CacheBenchFormat.table(rows)
        print("")
        let def = store ? nil : r.policies.first { $0.policy == ResidencyPolicyKind.default.rawValue }
        print(
            "per layer: hit rate of each policy and MIN"
                + (def != nil
                    ? "; budget held by the default (\(ResidencyPolicyKind.default.rawValue)) and by MIN, mean share of the capacity"
                    : "")
                + (hintAccuracy != nil ? "; hint accuracy" : "") + ":")
        var head2 = ["layer"] + r.policies.map(\.label) + ["MIN"]
        if def != nil { head2 += ["default's budget", "MIN's budget"] }
        if hintAccuracy != nil { head2 += ["hint accuracy"] }
        var layerRows = [head2]
        for l in 0 ..< r.layers {
            var row =
                [String(l)] + r.policies.map { CacheBenchFormat.pct($0.per_layer[l]) } + [
                    CacheBenchFormat.pct(r.min_per_layer[l])
                ]
            if let def {
                row += [CacheBenchFormat.pct(def.resident_share[l]), CacheBenchFormat.pct(r.min_resident_share[l])]
            }
            if let hintAccuracy { row.append(hintAccuracy[l].map(CacheBenchFormat.pct) ?? "-") }
            layerRows.append(row)
        }
        CacheBenchFormat.table(layerRows)
        if store {
            print("")
            print(
                "stall: time in acquire when the expert was not resident; resident acquire: time in acquire on a hit during the replay, timer p50 the cost of the clock reads around it;"
            )
            print(
                "hot acquire+release: a tight loop over the experts resident at the end, hot baseline the same loop reading one atomic (isResident) instead"
            )
            print("")
            print(
                "memory beside the budget (peaks while replaying, loads from the \(loadPath.rawValue) path): the process's growth in resident memory, the store's pages in the page cache, and both together beyond the budget"
            )
            var memRows = [
                ["policy", "budget", "RSS growth", "store page cache", "beyond the budget", "of the budget"]
            ]
            for p in r.policies {
                guard let b = p.budget_bytes, let beyond = p.beyond_budget_bytes else { continue }
                memRows.append([
                    p.label, formatBytes(b), formatBytes(p.rss_growth_bytes ?? 0),
                    formatBytes(p.store_page_cache_bytes ?? 0),
                    formatBytes(beyond), CacheBenchFormat.pct(Double(beyond) / Double(max(b, 1))),
                ])
            }
            CacheBenchFormat.table(memRows)
        }
    }
}

extension ReadPath: ExpressibleByArgument {}

/// Peaks of memory use during a store-backed replay.
struct MemorySample {
    var rssGrowth = 0
    var pageCache = 0
    var beyond = Int.min
}

/// Everything `wstore bench cache` measured: one report per capacity.
struct BenchCacheOutput: Encodable {
    var runs: [Report]
    var summary: [String]
    /// Per layer, the share of the trace's predictions that were right (`nil` where none).
    var hint_accuracy: [Double?]?
    var cache_aware_routing: [RoutingRow]?
}

/// One cache-aware routing replay.
struct RoutingRow: Encodable {
    var capacity: Int
    var residency: Double
    var policy: String
    var tolerance: Double
    var hit_rate: Double
    var loads_per_access: Double
    /// Fraction of picks swapped for a resident candidate.
    var swapped: Double
    /// Mean router probability given up per token and layer.
    var mass_given_up: Double
}

/// The `--json` object of `wstore bench cache`.
struct Report: Encodable {
    var trace: String
    var note: String?
    var layers: Int
    var experts: Int
    var top_k: Int
    var tokens: Int
    var accesses: Int
    var capacity: Int
    var residency: Double
    var prefetch: Bool
    var store: String?
    var min_hit_rate: Double
    var min_loads_per_access: Double
    var min_per_layer: [Double]
    /// Per layer, MIN's mean share of the capacity.
    var min_resident_share: [Double]
    var policies: [PolicyReport]
}

/// One policy's figures in `wstore bench cache`.
struct PolicyReport: Encodable {
    var policy: String
    var hit_rate: Double
    var loads_per_access: Double
    var per_layer: [Double]
    var prefetch_hits: Int
    var wasted_prefetches: Int
    var demand_loads: Int
    /// Per layer, the policy's mean share of the capacity.
    var resident_share: [Double]
    var prefetch_loads: Int
    var gap_closed: Double?
    var stall_p50_us: Double?
    var stall_p99_us: Double?
    var resident_acquire_p50_ns: Double?
    var timer_p50_ns: Double?
    var hot_acquire_release_ns: Double?
    var hot_baseline_ns: Double?
    var coalesced_waits: Int?
    /// With --store: the budget, and the peaks over the replay of the process's growth in
    /// resident memory, of the store's pages in the page cache, and of the two together
    /// beyond the budget.
    var budget_bytes: Int?
    var rss_growth_bytes: Int?
    var store_page_cache_bytes: Int?
    var beyond_budget_bytes: Int?
    /// With --store: the precision asked for (see --precision), the bytes loaded from the
    /// store (decoded size, demand and background loads) per access, the share of hits a
    /// low-bit copy served, and the background upgrades and low-bit loads.
    var precision: String?
    var bytes_loaded_per_access: Double?
    /// Bytes of records read from the store per access (their stored, compressed size).
    var bytes_read_per_access: Double?
    var low_precision_hit_share: Double?
    var upgrade_loads: Int?
    var low_precision_loads: Int?

    /// The policy, with the precision asked for when it is not exact.
    var label: String { precision.map { $0 == "exact" ? policy : "\(policy) \($0)" } ?? policy }

    init(_ r: ReplayResult) {
        policy = r.policy
        hit_rate = r.hitRate
        loads_per_access = r.loadsPerAccess
        per_layer = r.perLayerHitRate
        prefetch_hits = r.prefetchHits
        wasted_prefetches = r.wastedPrefetches
        demand_loads = r.demandLoads
        prefetch_loads = r.prefetchLoads
        resident_share = r.residentShare
    }
}
