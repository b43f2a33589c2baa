import CHiredis

/// hiredis reply-object functions that build ``RedisReply`` values as the reader parses, so
/// a bulk string is copied once, from the reader's buffer into its `[UInt8]`, instead of into
/// a `redisReply` first and out of it again (read.h: `redisReplyObjectFunctions`).
///
/// Each object the reader asks for is a ``ReplyBuilder/Node``. A top-level one is retained for
/// the reader and handed back by `redisReaderGetReply`, then taken with ``take(_:)``; one
/// inside an array is owned by its parent (hiredis passes it in `task->parent->obj`), as the
/// default functions link `parent->element[idx]`. `freeObject`, called by hiredis only on a
/// top-level object (an error mid-reply, or the reader freed), releases it.
enum ReplyBuilder {
    final class Node {
        var reply: RedisReply
        var children: [Node?]
        init(_ reply: RedisReply, children: Int = 0) {
            self.reply = reply
            self.children = [Node?](repeating: nil, count: children)
        }

        /// The reply with its array elements filled in (an element hiredis never delivered is `.null`).
        var value: RedisReply {
            guard case .array = reply else { return reply }
            return .array(children.map { $0?.value ?? .null })
        }
    }

    /// The functions, at a stable address for the reader's `fn`.
    nonisolated(unsafe) static let functions: UnsafeMutablePointer<redisReplyObjectFunctions> = {
        let f = UnsafeMutablePointer<redisReplyObjectFunctions>.allocate(capacity: 1)
        f.initialize(
            to: redisReplyObjectFunctions(
                createString: { task, str, len in
                    let bytes = UnsafeRawBufferPointer(start: str, count: len)
                    let reply: RedisReply =
                        switch task!.pointee.type {
                        case REDIS_REPLY_STATUS: .status(String(decoding: bytes, as: UTF8.self))
                        case REDIS_REPLY_ERROR: .error(String(decoding: bytes, as: UTF8.self))
                        default: .string(len == 0 ? [] : Array(bytes))
                        }
                    return ReplyBuilder.attach(Node(reply), task!)
                },
                createArray: { task, elements in
                    ReplyBuilder.attach(Node(.array([]), children: max(0, Int(elements))), task!)
                },
                createInteger: { task, value in ReplyBuilder.attach(Node(.integer(Int(value))), task!) },
                createNil: { task in ReplyBuilder.attach(Node(.null), task!) },
                freeObject: { object in
                    if let object { Unmanaged<Node>.fromOpaque(object).release() }
                }))
        return f
    }()

    /// Links `node` into its parent array, or retains it for the reader when it has none.
    private static func attach(_ node: Node, _ task: UnsafePointer<redisReadTask>) -> UnsafeMutableRawPointer {
        if let parent = task.pointee.parent, let p = parent.pointee.obj {
            let owner = Unmanaged<Node>.fromOpaque(p).takeUnretainedValue()
            let i = Int(task.pointee.idx)
            if owner.children.indices.contains(i) { owner.children[i] = node }
            return Unmanaged.passUnretained(node).toOpaque()
        }
        return Unmanaged.passRetained(node).toOpaque()
    }

    /// The reply of a top-level object `redisReaderGetReply` returned, releasing the object.
    static func take(_ object: UnsafeMutableRawPointer) -> RedisReply {
        Unmanaged<Node>.fromOpaque(object).takeRetainedValue().value
    }
}
