/// A small value bound to its key (format version 2): the value's bytes, then the
/// xxh3-64 of those bytes seeded with ``Record/binding(key:)`` of the LMDB key, as 8
/// little-endian bytes. A sealed value read under another key, or damaged, does not open.
/// Store metadata, model info and expert index entries are sealed (FORMAT.md §2, §3).
package enum Sealed {
    /// Bytes the seal adds.
    package static let trailerSize = 8

    /// `value` followed by its seal for `key`.
    package static func seal(_ value: [UInt8], key: [UInt8]) -> [UInt8] {
        let binding = Record.binding(key: key)
        let digest = value.withUnsafeBytes { xxh3($0, seed: binding) }
        return value + withUnsafeBytes(of: digest.littleEndian) { Array($0) }
    }

    /// The value inside `bytes` when its seal matches `key`; `nil` when it does not (damaged,
    /// under the wrong key, or an unsealed version-1 value).
    package static func open(_ bytes: UnsafeRawBufferPointer, key: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer? {
        guard bytes.count >= trailerSize else { return nil }
        let value = UnsafeRawBufferPointer(rebasing: bytes[..<(bytes.count - trailerSize)])
        let stored = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: value.count, as: UInt64.self))
        return xxh3(value, seed: Record.binding(key: key)) == stored ? value : nil
    }

    /// See ``open(_:key:)``.
    package static func open(_ bytes: UnsafeRawBufferPointer, key: [UInt8]) -> UnsafeRawBufferPointer? {
        key.withUnsafeBytes { open(bytes, key: $0) }
    }
}

extension Sealed {
    /// The suffix a sealed JSON object ends with: `,"seal":"` 16 lowercase hex digits `"}`.
    static let jsonSuffixLength = 27

    /// A JSON object (`{…}`, not empty) sealed to `key` and still a JSON object, so that a
    /// reader that ignores unknown fields (any version-1 reader) reads it as it was: the
    /// last field becomes `"seal":"<hex>"`, the xxh3-64 (seeded with ``Record/binding(key:)``)
    /// of every byte before `,"seal":`, as 16 lowercase hex digits.
    package static func sealJSON(_ json: [UInt8], key: [UInt8]) -> [UInt8] {
        precondition(
            json.count > 2 && json.first == UInt8(ascii: "{") && json.last == UInt8(ascii: "}"),
            "only a non-empty JSON object can be sealed")
        let body = Array(json.dropLast())
        let digest = body.withUnsafeBytes { xxh3($0, seed: Record.binding(key: key)) }
        let hex = String(digest, radix: 16)
        return body + Array(",\"seal\":\"\(String(repeating: "0", count: 16 - hex.count) + hex)\"}".utf8)
    }

    /// The JSON object inside a sealed one, with the seal field removed, when the seal
    /// matches `key`; `nil` when there is no seal or it does not match.
    package static func openJSON(_ bytes: UnsafeRawBufferPointer, key: [UInt8]) -> [UInt8]? {
        guard bytes.count > jsonSuffixLength + 1 else { return nil }
        let bodyLength = bytes.count - jsonSuffixLength
        let suffix = Array(bytes[bodyLength...])
        guard suffix.starts(with: Array(",\"seal\":\"".utf8)), suffix.suffix(2) == Array("\"}".utf8)[...],
            let stored = UInt64(String(decoding: suffix[9 ..< 25], as: UTF8.self), radix: 16)
        else { return nil }
        let body = UnsafeRawBufferPointer(rebasing: bytes[..<bodyLength])
        guard xxh3(body, seed: Record.binding(key: key)) == stored else { return nil }
        return Array(body) + [UInt8(ascii: "}")]
    }
}
