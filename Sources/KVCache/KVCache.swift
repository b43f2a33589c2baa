// The KV cache: prefix-keyed, compressed KV tensors (see the KVCache issue).
import WStoreCore
