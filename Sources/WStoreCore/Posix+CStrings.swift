import Glibc

extension Posix {
    /// A malloc'd copy of `s` as a C string (strdup(3)), for a C caller to keep; release it
    /// with ``freeCString(_:)``.
    package static func duplicateCString(_ s: String) -> UnsafeMutablePointer<CChar> {
        guard let p = strdup(s) else { preconditionFailure("strdup: out of memory") }
        return p
    }

    /// free(3) of a string from ``duplicateCString(_:)``; `nil` is fine.
    package static func freeCString(_ p: UnsafeMutableRawPointer?) { free(p) }

    /// Whether two C strings hold the same bytes (strcmp(3)).
    package static func equalCStrings(_ a: UnsafePointer<CChar>?, _ b: UnsafePointer<CChar>) -> Bool {
        guard let a else { return false }
        return strcmp(a, b) == 0
    }

    /// One C string per thread (a pthread key), freed when replaced or when its thread exits.
    package final class ThreadLocalCString: Sendable {
        private let key: pthread_key_t

        package init() {
            var key = pthread_key_t()
            let rc = pthread_key_create(&key) { free($0) }
            precondition(rc == 0, "pthread_key_create failed: \(rc)")
            self.key = key
        }

        /// The calling thread's string, `nil` before the first ``set(_:)``.
        package var value: UnsafePointer<CChar>? {
            pthread_getspecific(key).map { UnsafePointer($0.assumingMemoryBound(to: CChar.self)) }
        }

        /// Replaces the calling thread's string with a copy of `s`.
        package func set(_ s: String) {
            let old = pthread_getspecific(key)
            pthread_setspecific(key, strdup(s))
            free(old)
        }
    }
}
