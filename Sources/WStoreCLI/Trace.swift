import ArgumentParser

/// `wstore trace`: routing traces (format-spec/ROUTING-TRACE.md).
struct Trace: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Work with routing traces (format-spec/ROUTING-TRACE.md).",
        subcommands: [TraceSynthCommand.self])
}
