/// How a name taken from an input file (a tensor name, a metadata key, a file name in
/// an index) is printed: escaped, so that a name holding a newline, an escape sequence
/// or a NUL cannot break an error message into lines, drive the terminal, or hide
/// what follows it. Every message that quotes such a name uses ``quoted``.
extension String {
    /// The text in double quotes, with `"` and `\` escaped and every control or
    /// invisible-direction character written as `\n`, `\t`, `\r`, `\0` or `\u{XX}`.
    public var quoted: String { "\"" + escaped(quote: true) + "\"" }

    /// The text with every control or invisible-direction character written as an
    /// escape (`\n`, `\t`, `\r`, `\0`, `\u{1B}`), so it prints as one inert line.
    /// Printable text, `"` and `\` included, comes out unchanged.
    public var escapingControls: String { escaped(quote: false) }

    private func escaped(quote: Bool) -> String {
        // Most names need nothing: return them as they are.
        if !unicodeScalars.contains(where: { $0.needsEscape || (quote && ($0 == "\"" || $0 == "\\")) }) { return self }
        var out = ""
        out.reserveCapacity(utf8.count + 8)
        for s in unicodeScalars {
            switch s {
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            case "\0": out += "\\0"
            case "\"" where quote: out += "\\\""
            case "\\" where quote: out += "\\\\"
            case _ where s.needsEscape: out += "\\u{" + String(s.value, radix: 16, uppercase: true) + "}"
            default: out.unicodeScalars.append(s)
            }
        }
        return out
    }
}

extension Unicode.Scalar {
    /// C0 and C1 controls, DEL, line and paragraph separators, and the bidirectional
    /// overrides and isolates that reorder what a terminal shows.
    fileprivate var needsEscape: Bool {
        switch value {
        case 0x00 ..< 0x20, 0x7F ... 0x9F, 0x2028, 0x2029, 0x202A ... 0x202E, 0x2066 ... 0x2069, 0x200E, 0x200F, 0x061C:
            true
        default: false
        }
    }
}
