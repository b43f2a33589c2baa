import ArgumentParser
import WeightStore

/// The `wstore` command: one subcommand per file in this folder.
public struct WStoreCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "wstore",
        abstract: "An embedded storage engine for model weights and KV caches.",
        version: wstoreVersion,
        subcommands: [
            Sample.self,
            Inspect.self,
            KV.self,
            Bench.self,
            Trace.self,
            Pack.self,
            Export.self,
            Verify.self,
            Upgrade.self,
        ]
    )

    public init() {}
}
