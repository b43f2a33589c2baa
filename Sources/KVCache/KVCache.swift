// The KV cache: prefix-keyed, compressed KV tensors, SnapKV selection and KIVI-style
// quantization. format-spec/KV.md describes the store on disk.
@_exported import enum WStoreCore.DType
@_exported import enum WStoreCore.WStoreError
@_exported import struct WStoreCore.LMDBError
import WStoreCore
