import ArgumentParser
import Foundation
import KVCache
import WStoreCore

/// `wstore kv`: KV-cache files and stores.
struct KV: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kv",
        abstract: "Compress KV-cache files (SnapKV, KIVI quantization) and inspect KV stores.",
        subcommands: [
            KVCompress.self,
            KVInspect.self,
        ]
    )
}

extension KVCodec: ExpressibleByArgument {}
extension KVStore.Durability: ExpressibleByArgument {}

/// Parses `key=value,key=value` option text.
func parseKeyValues(_ text: String, option: String) throws -> [String: String] {
    var out: [String: String] = [:]
    for part in text.split(separator: ",") where !part.isEmpty {
        let kv = part.split(separator: "=", maxSplits: 1)
        guard kv.count == 2 else { throw ValidationError("\(option): expected key=value, got \(part)") }
        out[String(kv[0]).trimmingCharacters(in: .whitespaces)] = String(kv[1]).trimmingCharacters(in: .whitespaces)
    }
    return out
}

/// Seconds spent in `body`.
func kvTime<R>(_ body: () throws -> R) rethrows -> (R, Double) {
    let start = ContinuousClock.now
    let r = try body()
    let d = ContinuousClock.now - start
    return (r, Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18)
}

/// Wall seconds and process CPU seconds spent in `body` (CPU time counts every thread of
/// the process, so on a busy machine it is the steadier figure).
func kvTimeCPU<R>(_ body: () throws -> R) rethrows -> (R, wall: Double, cpu: Double) {
    let c0 = Posix.processCPUSeconds()
    let (r, wall) = try kvTime(body)
    return (r, wall, Posix.processCPUSeconds() - c0)
}
