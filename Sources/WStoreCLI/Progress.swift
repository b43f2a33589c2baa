import Foundation
import WStoreCore

/// Progress of a long command on stderr: a bar (bytes, rate, ETA) redrawn in place
/// on a terminal, plain lines otherwise, nothing when quiet.
final class Progress {
    enum Mode { case bar, lines, quiet }

    let mode: Mode
    let total: Int
    let label: String
    private var done = 0
    private var lastDraw = 0.0
    private let start = Date()

    /// `quiet` wins; otherwise a bar when stderr is a terminal.
    init(label: String, total: Int, quiet: Bool) {
        self.label = label
        self.total = total
        mode = quiet ? .quiet : (Posix.standardErrorIsTerminal ? .bar : .lines)
    }

    /// Adds `bytes` to what is done; redraws at most 10 times a second (a line per call when plain).
    func advance(_ bytes: Int, note: String = "") {
        done += bytes
        let now = Date().timeIntervalSince(start)
        switch mode {
        case .quiet: return
        case .lines:
            FileHandle.standardError.write(Data((line(now) + (note.isEmpty ? "" : "  " + note) + "\n").utf8))
        case .bar:
            guard now - lastDraw >= 0.1 || done >= total else { return }
            lastDraw = now
            FileHandle.standardError.write(Data(("\r\u{1B}[K" + bar(now)).utf8))
        }
    }

    /// Ends the bar's line.
    func finish() {
        if mode == .bar { FileHandle.standardError.write(Data("\n".utf8)) }
    }

    private func stats(_ t: Double) -> (rate: String, eta: String, pct: Double) {
        let rate = t > 0 ? Double(done) / t : 0
        let left = rate > 0 ? Double(total - done) / rate : 0
        let pct = total > 0 ? Double(done) / Double(total) : 1
        return (formatBytes(Int(rate)) + "/s", done >= total ? "done" : String(format: "ETA %.0fs", left), pct)
    }

    private func line(_ t: Double) -> String {
        let s = stats(t)
        return String(
            format: "%@ %5.1f%%  %@ of %@  %@  %@", label, s.pct * 100, formatBytes(done), formatBytes(total), s.rate,
            s.eta)
    }

    private func bar(_ t: Double) -> String {
        let s = stats(t), width = 30
        let filled = min(width, Int(s.pct * Double(width)))
        let b = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
        return String(
            format: "%@ [%@] %5.1f%%  %@/%@  %@  %@", label, b, s.pct * 100, formatBytes(done), formatBytes(total),
            s.rate, s.eta)
    }
}
