import Foundation

/// The repository's root directory (this file is Tests/WStoreTestSupport/Paths.swift).
package let repositoryRoot: String = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent().path

/// The shared data folder beside the repository (`../shared/data`), which tests may read
/// but which may be absent.
package let sharedDataRoot = URL(fileURLWithPath: repositoryRoot).deletingLastPathComponent()
    .appendingPathComponent("shared/data").path

/// The path of `relative` in the shared data folder, or `nil` when it is absent: use it with
/// `.enabled(if: sharedData("...") != nil, "...")` so the skip is visible.
package func sharedData(_ relative: String) -> String? {
    let path = sharedDataRoot + "/" + relative
    return FileManager.default.fileExists(atPath: path) ? path : nil
}
