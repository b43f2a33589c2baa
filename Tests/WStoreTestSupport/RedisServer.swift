import Foundation
import WStoreRemote

/// A redis-server this test process started on a free loopback port, in its own temporary
/// directory, without persistence; stopped (by the pid it started) when dropped.
package final class RedisServer: @unchecked Sendable {
    /// redis-server and redis-cli on PATH (`make deps` installs them), or `nil`.
    package static let binaries: (server: String, cli: String)? = {
        let dirs =
            (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init)
            + ["/usr/bin", "/usr/local/bin", "/usr/sbin"]
        func find(_ name: String) -> String? {
            dirs.map { $0 + "/" + name }.first { FileManager.default.isExecutableFile(atPath: $0) }
        }
        guard let s = find("redis-server"), let c = find("redis-cli") else { return nil }
        return (s, c)
    }()

    /// Whether Redis tests can run; says so visibly when they cannot.
    package static let available: Bool = {
        if binaries == nil {
            print("note: redis-server/redis-cli not found on PATH after `make deps`; the Redis tests are skipped")
        }
        return binaries != nil
    }()

    package let port: Int
    package let dir: String
    let extraArguments: [String]
    package private(set) var process: Process?

    /// `redis://[:password@]127.0.0.1:port`.
    package let url: String

    /// Starts a server; `password` sets `requirepass`; `cluster` enables cluster mode.
    package init(port: Int? = nil, password: String? = nil, cluster: Bool = false, arguments: [String] = []) throws {
        self.port = try port ?? freePort()
        dir = NSTemporaryDirectory() + "wstore-redis-\(port)-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var extra = arguments
        if let password { extra += ["--requirepass", password] }
        if cluster {
            extra += [
                "--cluster-enabled", "yes", "--cluster-port", String(try freePort()), "--cluster-config-file",
                dir + "/nodes.conf", "--cluster-node-timeout", "2000",
            ]
        }
        extraArguments = extra
        url = "redis://" + (password.map { ":\($0)@" } ?? "") + "127.0.0.1:\(self.port)"
        try start()
    }

    /// Starts (or restarts, same port and directory) the server and waits until it answers PING.
    package func start() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: RedisServer.binaries!.server)
        p.arguments =
            [
                "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--daemonize", "no", "--dir", dir, "--logfile", dir + "/redis.log",
            ] + extraArguments
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        process = p
        let deadline = Date().addingTimeInterval(10)
        while true {
            do {
                _ = try RedisClient(urls: [url])
                return
            } catch RemoteError.authFailed {
                return  // it answers
            } catch {
                guard Date() < deadline, p.isRunning else {
                    throw RemoteError.io(
                        endpoint: "127.0.0.1:\(port)", message: "redis-server did not come up: \(error)")
                }
                Thread.sleep(forTimeInterval: 0.02)
            }
        }
    }

    /// SIGKILL, as a crash would (also how tests stop it: it keeps no data on disk, and a child of
    /// this process may inherit a signal mask that blocks SIGTERM).
    package func kill() {
        guard let p = process, p.isRunning else { return }
        Glibc.kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
    }

    deinit {
        kill()
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// Runs redis-cli with `arguments` against this server; its stdout.
    @discardableResult
    package func cli(_ arguments: [String]) throws -> String {
        try runTool(RedisServer.binaries!.cli, ["-h", "127.0.0.1", "-p", String(port)] + arguments)
    }
}

/// A 3-master Redis Cluster on loopback, made with `redis-cli --cluster create`.
package final class RedisCluster: @unchecked Sendable {
    package let nodes: [RedisServer]
    package var urls: [String] { nodes.map(\.url) }

    package init(masters: Int = 3) throws {
        nodes = try (0 ..< masters).map { _ in try RedisServer(cluster: true) }
        try runTool(
            RedisServer.binaries!.cli,
            ["--cluster", "create"] + nodes.map { "127.0.0.1:\($0.port)" } + ["--cluster-yes"])
        try waitUntilOK()
    }

    /// Waits until every node says `cluster_state:ok` and agrees on the slots.
    package func waitUntilOK() throws {
        let deadline = Date().addingTimeInterval(15)
        while Date() < deadline {
            let ok = nodes.allSatisfy { ((try? $0.cli(["cluster", "info"])) ?? "").contains("cluster_state:ok") }
            if ok,
                (try? runTool(RedisServer.binaries!.cli, ["--cluster", "check", "127.0.0.1:\(nodes[0].port)"])) != nil
            {
                return
            }
            Thread.sleep(forTimeInterval: 0.1)
        }
        throw RemoteError.cluster("test cluster did not become ok")
    }

    /// The node id of node `i`.
    package func id(_ i: Int) throws -> String {
        try nodes[i].cli(["cluster", "myid"]).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Starts moving `slots` slots from node `from` to node `to` (`redis-cli --cluster reshard`); returns the process.
    package func startReshard(from: Int, to: Int, slots: Int) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: RedisServer.binaries!.cli)
        p.arguments = [
            "--cluster", "reshard", "127.0.0.1:\(nodes[0].port)", "--cluster-from", try id(from),
            "--cluster-to", try id(to), "--cluster-slots", String(slots), "--cluster-yes",
            "--cluster-pipeline", "10",
        ]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        return p
    }
}

/// A loopback TCP port nothing listens on right now (bound to port 0, then released).
package func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw RemoteError.io(endpoint: "127.0.0.1", message: "socket() failed") }
    defer { close(fd) }
    guard let port = bindLoopback(fd, listening: false) else {
        throw RemoteError.io(endpoint: "127.0.0.1", message: "bind() failed")
    }
    return port
}

/// Binds socket `fd` to a port the kernel picks on 127.0.0.1 (and listens, when
/// `listening`); returns the port, or `nil` when a call fails.
private func bindLoopback(_ fd: Int32, listening: Bool) -> Int? {
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = 0
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, len) == 0 && (!listening || listen(fd, 8) == 0) && getsockname(fd, $0, &len) == 0
        }
    }
    return ok ? Int(UInt16(bigEndian: addr.sin_port)) : nil
}

/// Runs a tool, returns its stdout; throws with its output when it fails.
@discardableResult
func runTool(_ path: String, _ arguments: [String]) throws -> String {
    let r = runProcess(path, arguments, separateErrors: true)
    guard r.status == 0 else {
        throw RemoteError.io(
            endpoint: path,
            message: "\(arguments.joined(separator: " ")) failed: "
                + String((r.errors + r.output).suffix(400)))
    }
    return r.output
}

/// A TCP server on a free loopback port that answers whatever it is sent like an HTTP server
/// would, then closes: something that is not Redis. Serves `connections` connections on a thread.
package func startNotRedisServer(connections: Int) throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0, let port = bindLoopback(fd, listening: true) else {
        throw RemoteError.io(endpoint: "127.0.0.1", message: "could not listen")
    }
    let thread = Thread {
        for _ in 0 ..< connections {
            let c = accept(fd, nil, nil)
            guard c >= 0 else { break }
            var buf = [UInt8](repeating: 0, count: 256)
            _ = read(c, &buf, buf.count)
            let reply = Array("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n".utf8)
            _ = write(c, reply, reply.count)
            close(c)
        }
        close(fd)
    }
    thread.start()
    return port
}
