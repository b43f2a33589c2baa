import Synchronization

extension LMDBEnvironment {
    /// lmdb.h, caveats: "Do not have open an LMDB database twice in the same process at
    /// the same time. Not even from a plain open() call - close()ing it breaks flock()
    /// advisory locking." So every open of one store in this process shares one
    /// environment, kept here weakly and keyed by the device and inode of its
    /// `data.mdb`: a store moved into the same path (as `wstore pack` does) is a
    /// different file, and gets an environment of its own.
    private final class Weak: @unchecked Sendable {
        weak var env: LMDBEnvironment?
        init(_ env: LMDBEnvironment) { self.env = env }
    }
    private static let registry = Mutex<[String: Weak]>([:])

    /// The environment of directory `path`, opened once per process.
    ///
    /// A read-only request is served by an environment already open read-write; a
    /// read-write request while it is open read-only is refused.
    /// - Throws: ``WStoreError/invalidArgument(_:)`` for that conflict, ``LMDBError`` from LMDB.
    package static func shared(path: String, readOnly: Bool, options: Options = Options()) throws -> LMDBEnvironment {
        let dataFile = path + "/data.mdb"
        return try registry.withLock { envs in
            if let id = fileIdentity(dataFile), let env = envs[id]?.env {
                if env.readOnly && !readOnly {
                    throw WStoreError.invalidArgument(
                        "\(path) is already open read-only in this process; close it before opening it for writing")
                }
                return env
            }
            // Refuse a short data file before LMDB maps it (touching a mapped page past the
            // end of the file is SIGBUS), and a damaged B-tree before a cursor walks it.
            let existing = Posix.fileIdentity(dataFile) != nil
            if existing { _ = try LMDBFile.readMeta(path: dataFile) }
            let env = try LMDBEnvironment(path: path, readOnly: readOnly, options: options)
            if existing {
                let report = try env.checkPages()
                if let first = report.problems.first { throw WStoreError.damagedFile(path: dataFile, reason: first) }
            }
            envs = envs.filter { $0.value.env != nil }
            if let id = fileIdentity(dataFile) { envs[id] = Weak(env) }
            return env
        }
    }

    private static func fileIdentity(_ path: String) -> String? {
        Posix.fileIdentity(path).map { "\($0.device):\($0.inode)" }
    }

}
