import Foundation
import KVCache
import WStoreCore
import WStoreFormats
import WStoreReplay

/// The parsers wstore runs on bytes it did not write, one entry point each, for the
/// libFuzzer harness (Fuzz/) and for the regression tests of what it found.
///
/// Every entry point must return for any input: a parser that rejects bytes throws a
/// one-line error, which ``run(_:)`` returns; a trap, a crash or a sanitizer report is
/// a bug. What each accepts is checked against itself (tensor bytes inside the file,
/// decoded sizes as declared).
public enum FuzzTarget: String, CaseIterable, Sendable {
    /// The safetensors header reader (``SafetensorsFile``).
    case safetensors
    /// The GGUF reader (``GGUFFile``).
    case gguf
    /// The record header and frame table decoder, then the payload decoder.
    case record
    /// The KV chunk decoder and the KV index entry parser.
    case kv
    /// The routing-trace parser.
    case routingTrace = "routing-trace"
    /// The Mooncake-trace parser.
    case mooncake

    /// The key records are bound to (format v2) in the seeds and in every decode here.
    static let binding = Record.binding(key: Array("model\u{0}tensor".utf8))
    /// The chunk key KV chunks and index entries are bound to here.
    static let chunkKey: UInt64 = 0x5EED_C0DE

    /// Parses `data`; returns the error a rejected input gives, `nil` for an accepted one.
    /// Never traps on any input (that is what fuzzing checks).
    @discardableResult
    public func run(_ data: UnsafeRawBufferPointer) -> (any Error)? {
        do {
            switch self {
            case .safetensors: try Self.safetensors(data)
            case .gguf: try Self.gguf(data)
            case .record: try Self.record(data)
            case .kv: try Self.kv(data)
            case .routingTrace: _ = try RoutingTrace.parse(Data(data))
            case .mooncake: _ = try MooncakeTrace.parse([UInt8](data), path: "trace.jsonl")
            }
            return nil
        } catch {
            check(oneLine: error)
            return error
        }
    }

    /// An error message is one line of printable text.
    private func check(oneLine error: any Error) {
        let text = "\(error)"
        if text.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) {
            fatalError("\(rawValue): error message with a control character: \(text.debugDescription)")
        }
    }

    private static func safetensors(_ data: UnsafeRawBufferPointer) throws {
        let f = try SafetensorsFile(file: MappedFile(copying: data, path: "input.safetensors"))
        var total = 0
        for t in f.tensors { total += f.withBytes(of: t) { $0.count } }
        precondition(f.dataOffset + total == f.fileSize, "safetensors: accepted tensors do not cover the data section")
    }

    private static func gguf(_ data: UnsafeRawBufferPointer) throws {
        let f = try GGUFFile(file: MappedFile(copying: data, path: "input.gguf"))
        for t in f.tensors {
            precondition(
                t.byteRange.lowerBound >= 0 && t.byteRange.upperBound <= data.count, "gguf: tensor outside the file")
            _ = f.withBytes(of: t) { $0.count }
        }
        _ = f.metadata.map(\.value.description)
    }

    /// Decodes the record as it is, then again with its header checksum made to match
    /// (so that mutations reach the header fields and the frame table behind it).
    private static func record(_ data: UnsafeRawBufferPointer) throws {
        var first: (any Error)?
        do { try decodeRecord(data) } catch { first = error }
        var copy = [UInt8](data)
        try copy.withUnsafeMutableBytes { b in
            guard b.count >= Record.fixedHeaderSize else { return }
            let headerLength = Int(UInt32(littleEndian: b.loadUnaligned(fromByteOffset: 8, as: UInt32.self)))
            guard headerLength >= Record.fixedHeaderSize, headerLength <= b.count else { return }
            let sum = Record.headerChecksum(
                UnsafeRawBufferPointer(b), headerLength: headerLength, binding: Self.binding)
            b.storeBytes(of: sum.littleEndian, toByteOffset: 56, as: UInt64.self)
            try decodeRecord(UnsafeRawBufferPointer(b))
        }
        if let first { throw first }
    }

    private static func decodeRecord(_ data: UnsafeRawBufferPointer) throws {
        let view = try RecordView(data, binding: Self.binding, name: "record")
        // A hostile header may declare any size: decode only what a small input can be.
        guard view.rawSize <= 64 << 20 else { return }
        let out = UnsafeMutableRawBufferPointer.allocate(byteCount: max(view.rawSize, 1), alignment: 64)
        defer { out.deallocate() }
        let dst = UnsafeMutableRawBufferPointer(rebasing: out[0 ..< view.rawSize])
        try RecordDecoder.decode(view, name: "record", into: dst, threads: 1)
        try RecordDecoder.decode(view, name: "record", into: dst, threads: 2)
    }

    /// The first byte chooses: even, a KV chunk (decoded as it is and with its header
    /// checksum made to match); odd, a KV index entry.
    private static func kv(_ data: UnsafeRawBufferPointer) throws {
        guard let selector = data.first else { return }
        let rest = UnsafeRawBufferPointer(rebasing: data.dropFirst())
        if selector & 1 == 1 {
            // As it is, then with its seal (format v2) made to match the key.
            var first: (any Error)?
            do { _ = try KVStore.Node.parse(rest, key: Self.chunkKey) } catch { first = error }
            if rest.count >= 44 + Sealed.trailerSize,
                rest.loadUnaligned(fromByteOffset: 40, as: UInt32.self) == UInt32(0x324E_564B).littleEndian
            {
                let resealed = Sealed.seal(
                    Array(rest.dropLast(Sealed.trailerSize)), key: PrefixKey.bytes(Self.chunkKey))
                _ = try resealed.withUnsafeBytes { try KVStore.Node.parse($0, key: Self.chunkKey) }
            }
            if let first { throw first }
            return
        }
        var first: (any Error)?
        do { _ = try KVChunk.decode(rest, key: Self.chunkKey, name: "chunk", threads: 1) } catch { first = error }
        var copy = [UInt8](rest)
        try copy.withUnsafeMutableBytes { b in
            guard KVChunk.resealHeader(b, key: Self.chunkKey) else { return }
            _ = try KVChunk.decode(UnsafeRawBufferPointer(b), key: Self.chunkKey, name: "chunk", threads: 2)
        }
        if let first { throw first }
    }
}
