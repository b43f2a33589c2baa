import Foundation
import Synchronization
import Testing
import WStoreTestSupport

@testable import WStoreCore

/// The LMDB environment on its own: the map growing under readers, adopting a map another
/// process grew, and the per-process registry.
@Suite struct EnvironmentTests {
    static func key(_ i: Int) -> [UInt8] { Array("k\(i)".utf8) }

    /// Value `i`, `size` bytes that name `i`.
    static func value(_ i: Int, size: Int) -> [UInt8] { (0 ..< size).map { UInt8(truncatingIfNeeded: i &* 31 &+ $0) } }

    @Test func mapGrowsUnderConcurrentReaders() throws {
        let dir = TemporaryDirectory("env")
        var options = LMDBEnvironment.Options()
        options.initialMapSize = 1 << 20
        options.noSync = true
        let env = try LMDBEnvironment(path: dir.path, readOnly: false, options: options)
        let db = try env.database("t", create: true)
        let size = 64 << 10
        try env.write { txn in try Self.value(0, size: size).withUnsafeBytes { try txn.put(db, Self.key(0), $0) } }
        let startMap = env.mapSize
        let writing = Atomic<Bool>(true)
        let badReads = Atomic<Int>(0), reads = Atomic<Int>(0)
        let readers = (0 ..< 3).map { _ in
            Thread {
                while writing.load(ordering: .relaxed) {
                    do {
                        let ok = try env.withRead { txn in
                            try txn.get(db, Self.key(0)).map { Array($0) == Self.value(0, size: size) } ?? false
                        }
                        if !ok { badReads.add(1, ordering: .relaxed) }
                    } catch {
                        badReads.add(1, ordering: .relaxed)
                    }
                    reads.add(1, ordering: .relaxed)
                    // No pause: readers back to back must not hold the map change off (the gate
                    // prefers a waiting map change over new readers).
                }
            }
        }
        readers.forEach { $0.start() }
        for i in 1 ... 128 {  // 8 MiB of values: the map doubles several times
            try env.write { txn in try Self.value(i, size: size).withUnsafeBytes { try txn.put(db, Self.key(i), $0) } }
        }
        writing.store(false, ordering: .relaxed)
        while readers.contains(where: { !$0.isFinished }) { usleep(1000) }
        #expect(env.mapSize >= 8 * startMap)
        #expect(badReads.load(ordering: .relaxed) == 0 && reads.load(ordering: .relaxed) > 0)
        let stored = try env.withRead { txn in try [1, 64, 128].map { try txn.get(db, Self.key($0)).map(Array.init) } }
        #expect(stored == [1, 64, 128].map { Self.value($0, size: size) })
    }

    @Test func aReadInsideAWriteDoesNotDeadlockWithAMapChange() throws {
        let dir = TemporaryDirectory("env-nested")
        var options = LMDBEnvironment.Options()
        options.initialMapSize = 1 << 20
        options.noSync = true
        let env = try LMDBEnvironment(path: dir.path, readOnly: false, options: options)
        let db = try env.database("t", create: true)
        let size = 64 << 10
        let startMap = env.mapSize
        // Each write reads inside its closure (the gate's shared side taken twice by one
        // thread) while another thread keeps reading; the writes fill the map several times.
        let writing = Atomic<Bool>(true)
        let reader = Thread {
            while writing.load(ordering: .relaxed) { _ = try? env.withRead { try $0.get(db, Self.key(0)) } }
        }
        reader.start()
        for i in 0 ..< 96 {
            try env.write { txn in
                let before = try env.withRead { try $0.get(db, Self.key(max(0, i - 1))).map(Array.init) }
                if i > 0 { #expect(before == Self.value(i - 1, size: size)) }
                try Self.value(i, size: size).withUnsafeBytes { try txn.put(db, Self.key(i), $0) }
            }
        }
        writing.store(false, ordering: .relaxed)
        while !reader.isFinished { usleep(1000) }
        #expect(env.mapSize >= 4 * startMap)
    }

    /// A C program that opens the environment in `dir`, sets a 64 MiB map and writes 8 MiB
    /// under keys `c0`...`c127` into sub-database `t`: another process growing the map.
    static let grower = """
        #include <lmdb.h>
        #include <stdio.h>
        #include <string.h>
        #define CHECK(x) do { int rc = (x); if (rc) { fprintf(stderr, "%s: %s\\n", #x, mdb_strerror(rc)); return 1; } } while (0)
        int main(int argc, char **argv) {
            MDB_env *env; MDB_txn *txn; MDB_dbi dbi; static char buf[65536];
            CHECK(mdb_env_create(&env));
            CHECK(mdb_env_set_maxdbs(env, 16));
            CHECK(mdb_env_set_mapsize(env, 64 << 20));
            CHECK(mdb_env_open(env, argv[1], MDB_NOTLS, 0644));
            CHECK(mdb_txn_begin(env, NULL, 0, &txn));
            CHECK(mdb_dbi_open(txn, "t", 0, &dbi));
            for (int i = 0; i < 128; i++) {
                char key[16]; snprintf(key, sizeof key, "c%d", i); memset(buf, i, sizeof buf);
                MDB_val k = { strlen(key), key }, v = { sizeof buf, buf };
                CHECK(mdb_put(txn, dbi, &k, &v, 0));
            }
            CHECK(mdb_txn_commit(txn));
            mdb_env_close(env);
            return 0;
        }
        """

    @Test func adoptsAMapAnotherProcessGrew() throws {
        let dir = TemporaryDirectory("env")
        try Self.grower.write(toFile: dir.sub("grow.c"), atomically: true, encoding: .utf8)
        let cc = runProcess(cCompiler, ["-o", dir.sub("grow"), dir.sub("grow.c"), "-llmdb"])
        try #require(cc.status == 0, "\(cc.output)")
        try FileManager.default.createDirectory(atPath: dir.sub("env"), withIntermediateDirectories: true)
        var options = LMDBEnvironment.Options()
        options.initialMapSize = 1 << 20
        let env = try LMDBEnvironment.shared(path: dir.sub("env"), readOnly: false, options: options)
        let db = try env.database("t", create: true)
        try env.write { txn in
            try [UInt8](repeating: 7, count: 100).withUnsafeBytes { try txn.put(db, Self.key(0), $0) }
        }
        #expect(env.mapSize == 1 << 20)

        let child = runProcess(dir.sub("grow"), [dir.sub("env")])
        try #require(child.status == 0, "\(child.output)")
        // lmdb.h: a transaction begun after another process grew the map past ours fails with
        // MDB_MAP_RESIZED; the environment adopts the new size and begins again.
        let seen = try env.withRead { txn in
            (try txn.get(db, Array("c127".utf8)).map(Array.init), try txn.get(db, Self.key(0)).map(Array.init))
        }
        #expect(seen.0 == [UInt8](repeating: 127, count: 65536))
        #expect(seen.1 == [UInt8](repeating: 7, count: 100))
        #expect(env.mapSize == 64 << 20)
        try env.write { txn in
            try [UInt8](repeating: 8, count: 100).withUnsafeBytes { try txn.put(db, Self.key(1), $0) }
        }
    }

    @Test func registryKeepsOneEnvironmentPerFile() throws {
        let dir = TemporaryDirectory("env")
        let path = dir.sub("s")
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        let writer = try LMDBEnvironment.shared(path: path, readOnly: false)
        let reader = try LMDBEnvironment.shared(path: path, readOnly: true)
        #expect(reader === writer)  // a read-only open is served by the read-write environment

        // Replaced at the same path (a new data.mdb, as `wstore pack` does): a new environment.
        let other = dir.sub("t")
        try FileManager.default.createDirectory(atPath: other, withIntermediateDirectories: true)
        do {
            let env = try LMDBEnvironment(path: other, readOnly: false)
            let db = try env.database("x", create: true)
            try env.write { txn in try [UInt8]([1]).withUnsafeBytes { try txn.put(db, [1], $0) } }
        }
        try FileManager.default.removeItem(atPath: path)
        try FileManager.default.moveItem(atPath: other, toPath: path)
        let replaced = try LMDBEnvironment.shared(path: path, readOnly: true)
        #expect(replaced !== writer)
        let db = try replaced.database("x")
        let value = try replaced.withRead { txn in try txn.get(db, [1]).map(Array.init) }
        #expect(value == [1])

        // A read-write open while the file is open read-only in this process is refused.
        #expect(
            throws: WStoreError.invalidArgument(
                "\(path) is already open read-only in this process; close it before opening it for writing")
        ) {
            _ = try LMDBEnvironment.shared(path: path, readOnly: false)
        }
    }
}
