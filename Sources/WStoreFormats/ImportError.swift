import WStoreCore

/// A source checkpoint (safetensors, GGUF, an index or a mapping file) that cannot be
/// imported: prints as one line naming the file and what is wrong with it.
public struct ImportError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The file at fault.
    public let file: String
    /// What is wrong with it.
    public let reason: String

    /// An error about `file`.
    public init(file: String, _ reason: String) {
        self.file = file
        self.reason = reason
    }

    /// `FILE: reason`, one line: a control character in either is printed as an escape.
    public var description: String { "\(file): \(reason)".escapingControls }
}
