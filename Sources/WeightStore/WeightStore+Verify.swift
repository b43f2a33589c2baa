import WStoreCore

extension WeightStore {
    /// One tensor that failed verification.
    public struct VerifyFailure: Sendable, Hashable {
        public let model: String
        public let name: String
        /// One line: what is wrong.
        public let reason: String
    }

    /// The outcome of ``verify(threads:)``.
    public struct VerifyReport: Sendable {
        public var tensorsChecked = 0
        public var bytesChecked = 0
        public var failures: [VerifyFailure] = []
    }

    /// Re-reads every tensor of every model on one snapshot, decoding compressed
    /// records and checking every checksum. Damage is reported, never thrown.
    public func verify(threads: Int = defaultThreadCount) throws -> VerifyReport {
        var report = VerifyReport()
        let models = try models()
        try withSnapshot { s in
            for model in models {
                for name in try s.tensorNames(model: model) {
                    report.tensorsChecked += 1
                    do {
                        let r = try s.requireRecord(name, model: model)
                        if r.codec == .raw {
                            try RecordDecoder.verify(r, name: "\(model)/\(name)", r.payload)
                        } else {
                            let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: r.rawSize, alignment: 64)
                            defer { buf.deallocate() }
                            try RecordDecoder.decode(r, name: "\(model)/\(name)", into: buf, threads: threads)
                        }
                        report.bytesChecked += r.rawSize
                    } catch {
                        report.failures.append(VerifyFailure(model: model, name: name, reason: "\(error)"))
                    }
                }
            }
        }
        return report
    }
}
