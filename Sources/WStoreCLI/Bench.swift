import ArgumentParser

/// `wstore bench`: measurements, each reported beside a baseline measured in the same run.
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmarks, each beside a baseline measured in the same run.",
        subcommands: [
            BenchCodec.self,
            BenchKV.self,
            BenchKVRemote.self,
            BenchKVLookup.self,
            BenchSnapKV.self,
            BenchLoad.self,
            BenchCache.self,
            BenchQuant.self,
        ]
    )
}
