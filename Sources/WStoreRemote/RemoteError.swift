/// A failure of the remote KV tier's client: each case prints as one line a user can act on.
public enum RemoteError: Error, CustomStringConvertible, Sendable, Equatable {
    /// A `redis://` URL that cannot be used.
    case badURL(String, reason: String)
    /// Nothing listens at the address.
    case connectionRefused(endpoint: String)
    /// The server did not answer within the timeout.
    case timeout(endpoint: String, operation: String)
    /// The server refused the credentials, or needs some.
    case authFailed(endpoint: String, message: String)
    /// Something answers at the address, but not a Redis server.
    case notRedis(endpoint: String, detail: String)
    /// The connection failed or was closed.
    case io(endpoint: String, message: String)
    /// The server answered a command with an error.
    case server(endpoint: String, message: String)
    /// A cluster kept redirecting a key, or no node owns its slot.
    case cluster(String)

    public var description: String {
        switch self {
        case let .badURL(url, reason):
            "bad Redis URL \(url): \(reason); write redis://[user:password@]host:port"
        case let .connectionRefused(endpoint):
            "Redis at \(endpoint): connection refused; is redis-server running there?"
        case let .timeout(endpoint, operation):
            "Redis at \(endpoint): no answer to \(operation) within the timeout"
        case let .authFailed(endpoint, message):
            "Redis at \(endpoint) refused authentication (\(message)); check the user and password in the URL"
        case let .notRedis(endpoint, detail):
            "\(endpoint) is not a Redis server (\(detail)); check the host and port"
        case let .io(endpoint, message):
            "Redis at \(endpoint): \(message)"
        case let .server(endpoint, message):
            "Redis at \(endpoint) answered with an error: \(message)"
        case let .cluster(message):
            "Redis Cluster: \(message)"
        }
    }
}
