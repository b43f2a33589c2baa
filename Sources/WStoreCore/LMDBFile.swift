import Glibc

/// Checks of an LMDB data file made by reading it with `pread`, never through the map
/// and never through LMDB, so that a damaged file is reported instead of crashing the
/// process: LMDB does not checksum its pages, asserts on an inconsistent page
/// (`mdb.c: Assertion 'IS_LEAF(mp)' failed`), follows page numbers without bounds checks
/// (SIGSEGV), and a mapped file shorter than its used pages faults with SIGBUS.
///
/// The layout read here is LMDB 0.9's, for 64-bit builds (lmdb.h, mdb.c): `MDB_page`
/// header of 16 bytes (`mp_pgno` u64, `mp_pad` u16, `mp_flags` u16, `mp_lower`/`mp_upper`
/// u16 or `mp_pages` u32), `MDB_meta` after the header of pages 0 and 1, `MDB_node`
/// (`mn_lo`, `mn_hi`, `mn_flags`, `mn_ksize` u16, then the key, then the data).
/// format-spec/FORMAT.md §7 says what is checked and what a reader can still meet.
package enum LMDBFile {
    // mdb.c constants.
    static let pageHeaderSize = 16
    static let nodeHeaderSize = 8
    static let metaMagic: UInt32 = 0xBEEF_C0DE
    static let dataVersion: UInt32 = 1
    static let pBranch: UInt16 = 0x01, pLeaf: UInt16 = 0x02, pOverflow: UInt16 = 0x04, pMeta: UInt16 = 0x08
    /// Flags that may be left set on a page written to disk (P_DIRTY, P_LOOSE, P_KEEP).
    static let pIgnored: UInt16 = 0x10 | 0x4000 | 0x8000
    static let fBigData: UInt16 = 0x01, fSubData: UInt16 = 0x02, fDupData: UInt16 = 0x04
    static let mdbIntegerKey: UInt16 = 0x08
    static let invalidPage = UInt64.max
    static let dbRecordSize = 48

    /// One `MDB_db`: a B-tree's root and counts.
    package struct Tree: Sendable {
        var flags: UInt16, depth: Int
        var branchPages: UInt64, leafPages: UInt64, overflowPages: UInt64, entries: UInt64
        var root: UInt64

        init(_ b: UnsafeRawBufferPointer, at o: Int) {
            func u64(_ x: Int) -> UInt64 {
                UInt64(littleEndian: b.loadUnaligned(fromByteOffset: o + x, as: UInt64.self))
            }
            flags = UInt16(littleEndian: b.loadUnaligned(fromByteOffset: o + 4, as: UInt16.self))
            depth = Int(UInt16(littleEndian: b.loadUnaligned(fromByteOffset: o + 6, as: UInt16.self)))
            branchPages = u64(8)
            leafPages = u64(16)
            overflowPages = u64(24)
            entries = u64(32)
            root = u64(40)
        }
    }

    /// The newest valid meta page.
    package struct Meta: Sendable {
        package var pageSize: Int
        package var lastPage: UInt64
        package var txnID: UInt64
        var free: Tree, main: Tree
    }

    /// Reads both meta pages and returns the valid one with the higher transaction id, as
    /// `mdb_env_read_header` picks; checks that the file holds every page that meta says
    /// is in use (a shorter file would fault with SIGBUS when mapped pages are touched).
    /// - Throws: ``WStoreError/damagedFile(path:reason:)`` when no meta page is valid or the file is short;
    ///   ``WStoreError/io(call:path:errno:)`` when the file cannot be opened or read.
    package static func readMeta(path: String) throws -> Meta {
        let file = try OpenFile(path)
        return try readMeta(file)
    }

    static func readMeta(_ file: OpenFile) throws -> Meta {
        // A writer in another process may commit between the reads of the two meta pages
        // (twice, and the ids are no longer consecutive) or grow the file after it was
        // measured: damage is what persists over a few reads.
        var attempt = 0
        while true {
            do {
                return try readMetaOnce(file)
            } catch WStoreError.damagedFile where attempt < 3 {
                attempt += 1
                file.refreshSize()
            }
        }
    }

    private static func readMetaOnce(_ file: OpenFile) throws -> Meta {
        var metas: [Meta] = []
        var metaPages: [Int] = []
        var pageSize = 0
        var sawMagic = false
        for i in 0 ..< 2 {
            // Page 0 tells the page size; page 1 sits one page further.
            if i == 1 && pageSize == 0 { break }
            let at = i == 0 ? 0 : pageSize
            guard let b = try file.read(at: UInt64(at), count: 256) else { continue }
            let m = b.withUnsafeBytes { b -> Meta? in
                func u16(_ o: Int) -> UInt16 {
                    UInt16(littleEndian: b.loadUnaligned(fromByteOffset: o, as: UInt16.self))
                }
                func u32(_ o: Int) -> UInt32 {
                    UInt32(littleEndian: b.loadUnaligned(fromByteOffset: o, as: UInt32.self))
                }
                func u64(_ o: Int) -> UInt64 {
                    UInt64(littleEndian: b.loadUnaligned(fromByteOffset: o, as: UInt64.self))
                }
                let h = pageHeaderSize
                if u32(h) == metaMagic { sawMagic = true }
                guard u16(10) & ~pIgnored == pMeta, u32(h) == metaMagic, u32(h + 4) == dataVersion else { return nil }
                // MDB_meta: magic, version, address (8), mapsize (8), dbs[2] (48 each), last_pg, txnid.
                let free = Tree(b, at: h + 24), main = Tree(b, at: h + 24 + dbRecordSize)
                let psize = Int(u32(h + 24))  // mm_dbs[FREE_DBI].md_pad holds the page size
                guard psize >= 512, psize <= 65536, psize & (psize - 1) == 0 else { return nil }
                return Meta(
                    pageSize: psize, lastPage: u64(h + 24 + 2 * dbRecordSize), txnID: u64(h + 32 + 2 * dbRecordSize),
                    free: free, main: main)
            }
            if let m {
                metas.append(m)
                metaPages.append(i)
                if i == 0 { pageSize = m.pageSize }
            } else if i == 0 {
                // Without page 0 the page size is unknown: try the usual one for page 1.
                pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
            }
        }
        guard let meta = metas.max(by: { $0.txnID < $1.txnID }) else {
            // Neither page carries LMDB's magic number: this file was never an LMDB environment.
            if !sawMagic {
                let directory =
                    file.path.hasSuffix("/data.mdb") ? String(file.path.dropLast("/data.mdb".count)) : file.path
                throw WStoreError.notAStore(path: directory, reason: "data.mdb is not an LMDB environment")
            }
            throw WStoreError.damagedFile(path: file.path, reason: "no valid LMDB meta page")
        }
        // mdb.c writes the meta of transaction t to page t & 1, so the two pages hold two
        // consecutive commits. LMDB trusts the larger id blindly: a damaged id would make it
        // read an older tree, parts of which may since have been reused.
        for (i, m) in zip(metaPages, metas) where m.txnID & 1 != UInt64(i) {
            throw WStoreError.damagedFile(
                path: file.path, reason: "meta page \(i) holds transaction \(m.txnID), of the other page's parity")
        }
        if metas.count == 2 {
            let (a, b) = (min(metas[0].txnID, metas[1].txnID), max(metas[0].txnID, metas[1].txnID))
            guard b - a == 1 else {
                throw WStoreError.damagedFile(
                    path: file.path,
                    reason:
                        "its meta pages hold transactions \(metas[0].txnID) and \(metas[1].txnID), not two consecutive commits"
                )
            }
        }
        let needed = (meta.lastPage + 1).multipliedReportingOverflow(by: UInt64(meta.pageSize))
        guard !needed.overflow, meta.lastPage >= 1 else {
            throw WStoreError.damagedFile(
                path: file.path, reason: "its meta page says page \(meta.lastPage) is the last in use")
        }
        guard file.size >= needed.partialValue else {
            throw WStoreError.damagedFile(
                path: file.path,
                reason: "it is \(file.size) bytes, but its pages in use end at byte \(needed.partialValue) (truncated)")
        }
        return meta
    }

    /// What a page walk found.
    package struct Report: Sendable {
        /// Named sub-databases and their entry counts.
        package var databases: [String: UInt64] = [:]
        package var branchPages = 0, leafPages = 0, overflowPages = 0, freePages = 0
        /// Every inconsistency found, one line each (empty for a sound file).
        package var problems: [String] = []
    }

    /// Walks every B-tree page of the snapshot `meta` describes (the main tree, each
    /// named sub-database, the free list) and checks page numbers inside the used file,
    /// page headers, flags, bounds, node offsets, key order (within a page and against
    /// the branch keys above it), tree depth, overflow runs, the counts in each `MDB_db`,
    /// that no page is reached twice, and that no free page is also in use.
    /// Reads pages with `pread`; the file is never mapped.
    package static func walk(path: String, meta: Meta? = nil) throws -> Report {
        let file = try OpenFile(path)
        let meta = try meta ?? readMeta(file)
        var w = Walker(file: file, meta: meta)
        w.run()
        return w.report
    }

    /// Bounded number of problems kept (the first ones are the useful ones).
    static let maxProblems = 20
}

/// A read-only file descriptor read with `pread`, through the ``Posix`` funnel.
final class OpenFile {
    let path: String
    let fd: Int32
    private(set) var size: UInt64

    init(_ path: String) throws(WStoreError) {
        self.path = path
        fd = try Posix.openForReading(path)
        do { size = UInt64(try Posix.fileStatus(fd, path: path).size) } catch {
            Posix.close(fd)
            throw error
        }
    }

    deinit { Posix.close(fd) }

    /// Measures the file again (it only grows while a writer commits).
    func refreshSize() {
        if let s = try? Posix.fileStatus(fd, path: path).size { size = UInt64(s) }
    }

    /// `count` bytes at `offset`, or `nil` when the file ends before.
    func read(at offset: UInt64, count: Int) throws(WStoreError) -> [UInt8]? {
        guard offset <= size, UInt64(count) <= size - offset, offset <= UInt64(Int.max) else { return nil }
        var out = [UInt8](repeating: 0, count: count)
        var n = 0
        var failure: WStoreError?
        out.withUnsafeMutableBytes { b in
            do throws(WStoreError) { n = try Posix.pread(fd, into: b, at: Int(offset), path: path) } catch {
                failure = error
            }
        }
        if let failure { throw failure }
        return n == count ? out : nil
    }
}

/// The state of one page walk.
private struct Walker {
    let file: OpenFile
    let meta: LMDBFile.Meta
    var report = LMDBFile.Report()
    /// Pages reached so far (trees and free list), by page number.
    var used: [Bool]
    var freeList: [UInt64] = []
    var psize: Int { meta.pageSize }

    init(file: OpenFile, meta: LMDBFile.Meta) {
        self.file = file
        self.meta = meta
        used = Array(repeating: false, count: Int(min(meta.lastPage + 1, UInt64(Int32.max))))
    }

    mutating func problem(_ s: String) {
        if report.problems.count < LMDBFile.maxProblems { report.problems.append(s) }
    }

    /// Counts gathered while walking one tree.
    struct Counts { var branch: UInt64 = 0, leaf: UInt64 = 0, overflow: UInt64 = 0, entries: UInt64 = 0 }

    mutating func run() {
        // The main tree: its leaves name the sub-databases.
        var subs: [(String, LMDBFile.Tree)] = []
        walkTree(meta.main, name: "main tree") { name, node, w in
            guard node.flags & LMDBFile.fSubData != 0 else { return }
            guard node.data.count == LMDBFile.dbRecordSize else {
                w.problem("main tree: sub-database \(name) record of \(node.data.count) bytes")
                return
            }
            let key = String(decoding: node.key, as: UTF8.self)
            subs.append((key, node.data.withUnsafeBytes { LMDBFile.Tree($0, at: 0) }))
        }
        for (name, tree) in subs {
            report.databases[name] = tree.entries
            walkTree(tree, name: "database \(name)") { _, _, _ in }
        }
        walkTree(meta.free, name: "free list") { _, node, w in w.freeListEntry(node) }
        for p in freeList where p < UInt64(used.count) {
            if used[Int(p)] {
                problem("free list: page \(p) is also in use")
                break
            }
        }
        report.freePages = freeList.count
    }

    struct Node {
        var flags: UInt16
        var key: [UInt8]
        var data: [UInt8]
    }

    /// Walks one B-tree, calling `leaf` for every leaf node (with the data of an overflow
    /// node read in full only for the free list, whose values are page lists).
    mutating func walkTree(
        _ tree: LMDBFile.Tree, name: String,
        leaf: (String, Node, inout Walker) -> Void
    ) {
        guard tree.root != LMDBFile.invalidPage else {
            if tree.entries != 0 || tree.depth != 0 { problem("\(name): empty tree with \(tree.entries) entries") }
            return
        }
        var counts = Counts()
        let integerKeys = tree.flags & LMDBFile.mdbIntegerKey != 0
        walkPage(
            tree.root, depth: 1, tree: tree, name: name, low: nil, high: nil, integerKeys: integerKeys,
            counts: &counts, leaf: leaf)
        if counts.branch != tree.branchPages || counts.leaf != tree.leafPages || counts.overflow != tree.overflowPages
            || counts.entries != tree.entries
        {
            problem(
                "\(name): \(counts.branch)/\(counts.leaf)/\(counts.overflow) branch/leaf/overflow pages and \(counts.entries) entries found, its record says \(tree.branchPages)/\(tree.leafPages)/\(tree.overflowPages) and \(tree.entries)"
            )
        }
        report.branchPages += Int(counts.branch)
        report.leafPages += Int(counts.leaf)
        report.overflowPages += Int(counts.overflow)
    }

    /// Claims page `p` (and the `count - 1` after it); false when out of the file or taken.
    mutating func claim(_ p: UInt64, count: UInt64 = 1, name: String) -> Bool {
        guard p >= 2, count >= 1, p <= meta.lastPage, count - 1 <= meta.lastPage - p, p + count <= UInt64(used.count)
        else {
            problem("\(name): page \(p) (+\(count)) outside the pages in use (2...\(meta.lastPage))")
            return false
        }
        for q in p ..< p + count {
            if used[Int(q)] {
                problem("\(name): page \(q) is reached twice")
                return false
            }
            used[Int(q)] = true
        }
        return true
    }

    func keyLess(_ a: [UInt8], _ b: [UInt8], integer: Bool) -> Bool {
        if integer && a.count == 8 && b.count == 8 {
            return a.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
                < b.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        }
        return a.lexicographicallyPrecedes(b)
    }

    mutating func walkPage(
        _ pgno: UInt64, depth: Int, tree: LMDBFile.Tree, name: String, low: [UInt8]?, high: [UInt8]?,
        integerKeys: Bool, counts: inout Counts, leaf: (String, Node, inout Walker) -> Void
    ) {
        guard report.problems.count < LMDBFile.maxProblems else { return }
        guard depth <= 64, depth <= max(tree.depth, 1) else {
            problem("\(name): deeper than its recorded depth \(tree.depth) at page \(pgno)")
            return
        }
        guard claim(pgno, name: name) else { return }
        let page: [UInt8]
        do {
            guard let p = try file.read(at: pgno * UInt64(psize), count: psize) else {
                problem("\(name): page \(pgno) past the end of the file")
                return
            }
            page = p
        } catch {
            problem("\(name): \(error)")
            return
        }
        func u16(_ o: Int) -> UInt16 { UInt16(page[o]) | UInt16(page[o + 1]) << 8 }
        func u64(_ o: Int) -> UInt64 {
            page.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: o, as: UInt64.self)) }
        }
        let here = "\(name), page \(pgno)"
        guard u64(0) == pgno else {
            problem("\(here): header names page \(u64(0))")
            return
        }
        let flags = u16(10) & ~LMDBFile.pIgnored
        guard flags == LMDBFile.pBranch || flags == LMDBFile.pLeaf else {
            problem("\(here): flags 0x\(String(u16(10), radix: 16)) where a branch or leaf page belongs")
            return
        }
        let isLeaf = flags == LMDBFile.pLeaf
        if isLeaf { counts.leaf += 1 } else { counts.branch += 1 }
        if isLeaf != (depth == tree.depth) {
            problem("\(here): a \(isLeaf ? "leaf" : "branch") at depth \(depth) of a tree of depth \(tree.depth)")
            return
        }
        let lower = Int(u16(12)), upper = Int(u16(14))
        guard lower >= LMDBFile.pageHeaderSize, lower <= upper, upper <= psize,
            (lower - LMDBFile.pageHeaderSize) % 2 == 0
        else {
            problem("\(here): free-space bounds \(lower)..\(upper) impossible")
            return
        }
        let n = (lower - LMDBFile.pageHeaderSize) / 2
        guard n >= (isLeaf ? 1 : 2) else {
            problem("\(here): \(n) nodes")
            return
        }
        var nodes: [(flags: UInt16, key: [UInt8], lo: UInt64, dataAt: Int)] = []
        nodes.reserveCapacity(n)
        for i in 0 ..< n {
            let off = Int(u16(LMDBFile.pageHeaderSize + 2 * i))
            guard off >= upper, off + LMDBFile.nodeHeaderSize <= psize else {
                problem("\(here): node \(i) at offset \(off) outside the node area \(upper)..<\(psize)")
                return
            }
            let ksize = Int(u16(off + 6))
            guard off + LMDBFile.nodeHeaderSize + ksize <= psize else {
                problem("\(here): node \(i) key runs off the page")
                return
            }
            let nflags = u16(off + 4)
            let lohi = UInt64(u16(off)) | UInt64(u16(off + 2)) << 16
            let key = Array(page[(off + LMDBFile.nodeHeaderSize) ..< (off + LMDBFile.nodeHeaderSize + ksize)])
            nodes.append((nflags, key, lohi, off + LMDBFile.nodeHeaderSize + ksize))
        }
        // Keys ascend strictly within the page and stay within the bounds from above
        // (a branch's first key is unused).
        let first = isLeaf ? 0 : 1
        for i in first ..< n {
            let k = nodes[i].key
            if i > first && !keyLess(nodes[i - 1].key, k, integer: integerKeys) {
                problem("\(here): keys out of order at node \(i)")
                return
            }
            if let low, keyLess(k, low, integer: integerKeys) {
                problem("\(here): key below its branch bound")
                return
            }
            if let high, !keyLess(k, high, integer: integerKeys) {
                problem("\(here): key above its branch bound")
                return
            }
        }
        if !isLeaf {
            for i in 0 ..< n {
                // NODEPGNO: mn_lo | mn_hi << 16 | mn_flags << 32 on 64-bit builds.
                let child = nodes[i].lo | UInt64(nodes[i].flags) << 32
                let lo = i == 0 ? low : nodes[i].key
                let hi = i == n - 1 ? high : nodes[i + 1].key
                walkPage(
                    child, depth: depth + 1, tree: tree, name: name, low: lo, high: hi, integerKeys: integerKeys,
                    counts: &counts, leaf: leaf)
            }
            return
        }
        for (i, node) in nodes.enumerated() {
            counts.entries += 1
            let known = LMDBFile.fBigData | LMDBFile.fSubData
            guard node.flags & ~known == 0, node.flags != known else {
                problem("\(here): node \(i) flags 0x\(String(node.flags, radix: 16))")
                return
            }
            let dsize = node.lo
            var data: [UInt8] = []
            if node.flags & LMDBFile.fBigData != 0 {
                guard node.dataAt + 8 <= psize else {
                    problem("\(here): node \(i) overflow page number runs off the page")
                    return
                }
                let ov = u64(node.dataAt)
                guard let run = overflowRun(ov, dsize: dsize, name: here + " node \(i)") else { return }
                counts.overflow += run
                if name == "free list" {
                    // Free-list values are page lists: read them.
                    guard
                        let d = try? file.read(
                            at: ov * UInt64(psize) + UInt64(LMDBFile.pageHeaderSize), count: Int(dsize))
                    else {
                        problem("\(here): node \(i) overflow data unreadable")
                        return
                    }
                    data = d
                }
            } else {
                guard UInt64(node.dataAt) + dsize <= UInt64(psize) else {
                    problem("\(here): node \(i) data runs off the page")
                    return
                }
                data = Array(page[node.dataAt ..< node.dataAt + Int(dsize)])
            }
            leaf(String(decoding: node.key, as: UTF8.self), Node(flags: node.flags, key: node.key, data: data), &self)
        }
    }

    /// Checks the overflow run at `pgno` holding `dsize` bytes; returns its page count.
    mutating func overflowRun(_ pgno: UInt64, dsize: UInt64, name: String) -> UInt64? {
        guard pgno >= 2, pgno <= meta.lastPage else {
            problem("\(name): overflow page \(pgno) outside the pages in use (2...\(meta.lastPage))")
            return nil
        }
        guard let h = try? file.read(at: pgno * UInt64(psize), count: LMDBFile.pageHeaderSize) else {
            problem("\(name): overflow page \(pgno) unreadable")
            return nil
        }
        let (pg, flags, pages) = h.withUnsafeBytes {
            (
                UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)),
                UInt16(littleEndian: $0.loadUnaligned(fromByteOffset: 10, as: UInt16.self)),
                UInt64(UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: 12, as: UInt32.self)))
            )
        }
        guard pg == pgno, flags & ~LMDBFile.pIgnored == LMDBFile.pOverflow else {
            problem("\(name): page \(pgno) is not the start of an overflow run")
            return nil
        }
        let capacity = pages.multipliedReportingOverflow(by: UInt64(psize))
        guard pages >= 1, !capacity.overflow, dsize <= capacity.partialValue - UInt64(LMDBFile.pageHeaderSize) else {
            problem("\(name): \(dsize) bytes do not fit the \(pages) overflow pages at \(pgno)")
            return nil
        }
        guard claim(pgno, count: pages, name: name) else { return nil }
        return pages
    }

    /// A free-list value: a page count, then that many page numbers, descending (midl.h).
    mutating func freeListEntry(_ node: Node) {
        let d = node.data
        guard d.count >= 8, d.count % 8 == 0 else {
            problem("free list: entry of \(d.count) bytes")
            return
        }
        let ids = d.withUnsafeBytes { b in
            (0 ..< d.count / 8).map { UInt64(littleEndian: b.loadUnaligned(fromByteOffset: 8 * $0, as: UInt64.self)) }
        }
        guard ids[0] == UInt64(ids.count - 1) else {
            problem("free list: entry says \(ids[0]) pages in \(d.count) bytes")
            return
        }
        var previous = UInt64.max
        for p in ids.dropFirst() {
            guard p >= 2, p <= meta.lastPage, p < previous else {
                problem("free list: page \(p) out of range or order")
                return
            }
            previous = p
            freeList.append(p)
        }
    }
}

extension LMDBFile {
    /// Refuses, with "permission denied", a store directory this process cannot list or
    /// whose data file it cannot read; passes anything else on to the usual checks (a
    /// missing directory or data file is reported by the caller as not a store).
    /// - Throws: ``WStoreError/invalidArgument(_:)`` naming the path.
    package static func checkReadable(directory path: String) throws(WStoreError) {
        var st = stat()
        guard stat(path, &st) == 0 else {
            if errno == EACCES { throw .invalidArgument("\(path): permission denied") }
            return
        }
        guard (st.st_mode & S_IFMT) == S_IFDIR else { return }
        if access(path, R_OK | X_OK) != 0 && errno == EACCES {
            throw .invalidArgument("\(path): permission denied (the folder cannot be listed)")
        }
        let data = path + "/data.mdb"
        if access(data, F_OK) == 0 && access(data, R_OK) != 0 && errno == EACCES {
            throw .invalidArgument("\(data): permission denied")
        }
    }
}
