/// Where one Redis server listens, and the credentials to give it.
public struct RedisEndpoint: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int
    /// The ACL user (`nil`: the default user).
    public var user: String?
    /// The password (`nil`: no AUTH).
    public var password: String?

    public init(host: String, port: Int, user: String? = nil, password: String? = nil) {
        self.host = host
        self.port = port
        self.user = user
        self.password = password
    }

    /// `host:port`, without credentials.
    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// Parses `redis://[user:password@]host:port` (or `redis://:password@host:port`; the port defaults to 6379).
    /// - Throws: ``RemoteError/badURL(_:reason:)``.
    public init(url: String) throws {
        func bad(_ why: String) -> RemoteError { .badURL(url, reason: why) }
        guard url.hasPrefix("redis://") else { throw bad("it must start with redis://") }
        var rest = Substring(url.dropFirst("redis://".count))
        if let slash = rest.firstIndex(of: "/") {
            guard rest[slash...].allSatisfy({ $0 == "/" }) else {
                throw bad("database numbers and paths are not supported")
            }
            rest = rest[..<slash]
        }
        var user: String?, password: String?
        if let at = rest.lastIndex(of: "@") {
            let cred = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = cred.firstIndex(of: ":") {
                let u = String(cred[..<colon])
                user = u.isEmpty ? nil : u.removingPercentEncodingIfAny()
                password = String(cred[cred.index(after: colon)...]).removingPercentEncodingIfAny()
            } else {
                password = String(cred).removingPercentEncodingIfAny()
            }
        }
        var host = String(rest), port = 6379
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { throw bad("unclosed [ in the host") }
            host = String(rest[rest.index(after: rest.startIndex) ..< close])
            let after = rest[rest.index(after: close)...]
            if after.hasPrefix(":") {
                guard let p = Int(after.dropFirst()) else { throw bad("the port is not a number") }
                port = p
            } else if !after.isEmpty {
                throw bad("unexpected text after the host")
            }
        } else if let colon = rest.lastIndex(of: ":") {
            host = String(rest[..<colon])
            guard let p = Int(rest[rest.index(after: colon)...]) else { throw bad("the port is not a number") }
            port = p
        }
        guard !host.isEmpty else { throw bad("no host") }
        guard (1 ... 65535).contains(port) else { throw bad("port \(port) is out of range") }
        self.init(host: host, port: port, user: user, password: password)
    }

    /// The same server at another address, with these credentials (cluster nodes share the seed's).
    func moved(host: String, port: Int) -> RedisEndpoint {
        RedisEndpoint(host: host, port: port, user: user, password: password)
    }
}

extension String {
    /// Decodes `%XX` escapes (so a password may hold `@` or `:`); leaves the text as it is when it has none.
    fileprivate func removingPercentEncodingIfAny() -> String {
        guard contains("%") else { return self }
        var out: [UInt8] = []
        var bytes = Array(utf8)[...]
        while let b = bytes.popFirst() {
            if b == UInt8(ascii: "%"), bytes.count >= 2,
                let v = UInt8(String(decoding: bytes.prefix(2), as: UTF8.self), radix: 16)
            {
                out.append(v)
                bytes = bytes.dropFirst(2)
            } else {
                out.append(b)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
