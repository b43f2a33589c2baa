/*
 * wstore.h: the C ABI of wstore, for inference engines written in C, C++, Python (ctypes,
 * cffi) or anything else that calls C. Link with -lwstore-c: libwstore-c.so is the `wstore-c`
 * library product of the Swift package (see docs/C-ABI.md for building and an example).
 *
 * The model
 * ---------
 * - Every object is an opaque handle: wstore_store (an open store), wstore_residency (an
 *   expert residency manager over one model of a store) and wstore_expert (one pinned
 *   resident expert). The caller owns every handle an out-parameter returns and gives it
 *   back with the matching close/release function, exactly once.
 * - Every function that can fail returns an int status: WSTORE_OK (0) or one of the
 *   negative WSTORE_E_* codes below. On failure, out-parameters are left untouched and
 *   wstore_last_error() gives a one-line message a user can act on.
 * - No pointer wstore hands out outlives what keeps it alive, and each function says what
 *   that is: bytes in the memory map are lent to a callback and valid only during it;
 *   bytes of a resident expert are valid until that expert's handle is released.
 * - A `model` argument names the model namespace inside the store; NULL means "default".
 *   Strings passed in are NUL-terminated UTF-8 and only read during the call.
 *
 * Thread-safety: wstore_store and wstore_residency handles may be used from any number of
 * threads at once, except that closing one must not race any other call on it. A
 * wstore_expert handle may be read from any thread and released from any thread, once.
 * Callbacks run on the calling thread, before the call returns; they may call wstore
 * functions themselves (read snapshots nest). A callback must not unwind through wstore
 * (no longjmp, no C++ exception): return non-zero to stop instead.
 *
 * Errors that only a bug in the caller can cause (a handle used after close, a handle
 * released twice) are undefined behaviour, as for free(); NULL handles and NULL required
 * pointers are reported as WSTORE_E_INVALID_ARGUMENT.
 */
#ifndef WSTORE_H
#define WSTORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** The ABI version of this header; wstore_abi_version() gives the library's. */
#define WSTORE_ABI_VERSION 1

/** The largest tensor rank a store holds. */
#define WSTORE_MAX_RANK 16

/* ---------------------------------------------------------------- status codes */

/** Status codes. 0 is success; every error is negative. */
enum wstore_status {
    WSTORE_OK = 0,
    /** A NULL handle or pointer, a bad policy name, an out-of-range number. */
    WSTORE_E_INVALID_ARGUMENT = -1,
    /** No such tensor, model or expert. */
    WSTORE_E_NOT_FOUND = -2,
    /** The path is not a wstore store (missing, not a directory, not LMDB, no metadata). */
    WSTORE_E_NOT_A_STORE = -3,
    /** A newer wstore wrote the store; this library cannot read it. */
    WSTORE_E_NEWER_FORMAT = -4,
    /** A checksum mismatch, a record under the wrong key, or a damaged or truncated data
     *  file (refused at open): the store is corrupt (never wrong bytes, never a crash). */
    WSTORE_E_CORRUPT = -5,
    /** Zero-copy access to a compressed record: use wstore_read instead. */
    WSTORE_E_NOT_RAW = -6,
    /** The caller's buffer is smaller than the tensor's raw size. */
    WSTORE_E_BUFFER_TOO_SMALL = -7,
    /** The residency budget cannot hold the expert (too large, or all of it pinned). */
    WSTORE_E_BUDGET = -8,
    /** A callback returned non-zero; the call stopped there. */
    WSTORE_E_ABORTED = -9,
    /** An LMDB or file-system failure (I/O error, too many readers, ...). */
    WSTORE_E_IO = -10,
    /** Anything else. */
    WSTORE_E_INTERNAL = -11
};

/* ---------------------------------------------------------------- element types */

/** Element type codes, as stored in record headers (format-spec/FORMAT.md). */
enum wstore_dtype {
    WSTORE_DTYPE_BOOL = 0,
    WSTORE_DTYPE_U8 = 1,
    WSTORE_DTYPE_I8 = 2,
    WSTORE_DTYPE_I16 = 3,
    WSTORE_DTYPE_U16 = 4,
    WSTORE_DTYPE_I32 = 5,
    WSTORE_DTYPE_U32 = 6,
    WSTORE_DTYPE_I64 = 7,
    WSTORE_DTYPE_U64 = 8,
    WSTORE_DTYPE_F16 = 9,
    WSTORE_DTYPE_BF16 = 10,
    WSTORE_DTYPE_F32 = 11,
    WSTORE_DTYPE_F64 = 12,
    WSTORE_DTYPE_F8_E4M3 = 13,
    WSTORE_DTYPE_F8_E5M2 = 14,
    WSTORE_DTYPE_F8_E8M0 = 15,
    WSTORE_DTYPE_C64 = 16,
    WSTORE_DTYPE_F8_E4M3FNUZ = 17,
    WSTORE_DTYPE_F8_E5M2FNUZ = 18,
    WSTORE_DTYPE_F4 = 19,      /* packed, two per byte */
    WSTORE_DTYPE_F6_E2M3 = 20, /* packed, no padding */
    WSTORE_DTYPE_F6_E3M2 = 21, /* packed, no padding */
    /** Opaque GGUF/ggml quantized blocks; the ggml type id is in ggml_type. */
    WSTORE_DTYPE_GGML = 255
};

/** How a record's payload is stored. */
enum wstore_codec {
    /** The raw bytes: readable in place with wstore_with_tensor. */
    WSTORE_CODEC_RAW = 0,
    /** zstd over byte planes in independent frames: decode with wstore_read. */
    WSTORE_CODEC_ZSTD = 1
};

/** What the store knows of one tensor. A plain value: the caller owns it. */
typedef struct wstore_tensor_info {
    int32_t dtype;       /**< an enum wstore_dtype code */
    uint32_t ggml_type;  /**< the ggml type id when dtype is WSTORE_DTYPE_GGML, else 0 */
    int32_t codec;       /**< an enum wstore_codec code */
    int32_t rank;        /**< 0 ... WSTORE_MAX_RANK */
    int64_t shape[WSTORE_MAX_RANK]; /**< dimensions, outermost first (C order); unused entries 0 */
    uint64_t raw_size;   /**< bytes of the tensor itself: what wstore_read writes */
    uint64_t stored_size;/**< bytes of its stored payload */
    uint64_t checksum;   /**< xxh3-64 of the raw bytes */
} wstore_tensor_info;

/* ---------------------------------------------------------------- library */

/** The ABI version of the loaded library; compare with WSTORE_ABI_VERSION. Never fails. */
int wstore_abi_version(void);

/** The wstore version, e.g. "0.1.0". A static string: never free it. Never fails. */
const char *wstore_version(void);

/**
 * The message of the last failing wstore call on the calling thread, one line, or ""
 * when none failed yet. Thread-local: another thread's failure never changes it. Owned by
 * wstore: valid until the next failing wstore call on this thread; copy it to keep it.
 * A successful call does not clear it (like errno). Never fails.
 */
const char *wstore_last_error(void);

/** A short static name for a status code ("WSTORE_E_NOT_FOUND", ...). Never fails. */
const char *wstore_status_name(int status);

/* ---------------------------------------------------------------- stores */

/** An open store. Opaque. */
typedef struct wstore_store wstore_store;

/**
 * Opens the store in directory `path` read-only and sets *out to a new handle.
 * Opening one path several times is cheap and shares one memory map.
 * Errors: WSTORE_E_NOT_A_STORE, WSTORE_E_NEWER_FORMAT, WSTORE_E_IO.
 */
int wstore_open(const char *path, wstore_store **out);

/**
 * Closes a store handle; NULL is ignored. Residency managers opened on it keep the
 * store open until they are closed too. Pointers lent by callbacks are already gone
 * (they never outlive their callback).
 */
void wstore_close(wstore_store *store);

/** The store's format version (format-spec/FORMAT.md) into *out: 2, or 1 for a store
 *  written before records were bound to their keys (read-only; `wstore upgrade` rewrites it). */
int wstore_format_version(wstore_store *store, int *out);

/**
 * The model facts recorded for `model`: transformer layers, routed experts per layer,
 * experts per token; each is -1 when not recorded. Pointers may be NULL to skip a value.
 * Errors: WSTORE_E_NOT_FOUND when the model has no model record.
 */
int wstore_model_info(wstore_store *store, const char *model,
                      int64_t *layers, int64_t *experts_per_layer, int64_t *top_k);

/** Called once per model namespace; `name` is valid only during the call. */
typedef int (*wstore_model_fn)(const char *name, void *ctx);

/**
 * Calls `fn` for every model namespace of the store, sorted, with `ctx`. Stops with
 * WSTORE_E_ABORTED when `fn` returns non-zero.
 */
int wstore_list_models(wstore_store *store, wstore_model_fn fn, void *ctx);

/* ---------------------------------------------------------------- tensors */

/** Fills *out with what the store knows of tensor `name`. Errors: WSTORE_E_NOT_FOUND. */
int wstore_info(wstore_store *store, const char *model, const char *name,
                wstore_tensor_info *out);

/** Called once per tensor; `name` and `info` are valid only during the call. */
typedef int (*wstore_tensor_list_fn)(const char *name, const wstore_tensor_info *info, void *ctx);

/**
 * Calls `fn` for every tensor of `model`, in name order, all from one consistent
 * snapshot. Stops with WSTORE_E_ABORTED when `fn` returns non-zero.
 */
int wstore_list_tensors(wstore_store *store, const char *model, wstore_tensor_list_fn fn, void *ctx);

/** Flag for wstore_with_tensor: check the record's xxh3-64 block checksums before lending
 *  (reads every byte); without it only the header and its key binding are checked. */
#define WSTORE_VERIFY 1u

/**
 * Receives the bytes of a raw tensor in place in the memory map (zero-copy).
 * `data` (64-byte aligned for records on overflow pages) and `info` are valid ONLY
 * until the callback returns: do not keep them, copy what you need. The bytes are
 * read-only (the map is mapped read-only: writing to them faults).
 */
typedef int (*wstore_tensor_fn)(const void *data, size_t size, const wstore_tensor_info *info, void *ctx);

/**
 * Lends the bytes of raw tensor `name` to `fn`, zero-copy, inside one read snapshot
 * (which stays open, holding those pages, until `fn` returns: keep it short).
 * `flags` is 0 or WSTORE_VERIFY.
 * Errors: WSTORE_E_NOT_FOUND; WSTORE_E_NOT_RAW for a compressed record (use
 * wstore_read); WSTORE_E_CORRUPT when WSTORE_VERIFY finds a mismatch (then `fn` is not
 * called); WSTORE_E_ABORTED when `fn` returns non-zero.
 */
int wstore_with_tensor(wstore_store *store, const char *model, const char *name, uint32_t flags,
                       wstore_tensor_fn fn, void *ctx);

/**
 * Decodes tensor `name` into the caller's buffer `buf` of `len` bytes, which must hold
 * at least its raw size (raw_size of wstore_info); bytes past it are left alone.
 * Compressed frames decode on up to `threads` threads (<= 0: every core). Works for raw
 * records too (a copy). The checksum is always checked: a damaged record is
 * WSTORE_E_CORRUPT, never wrong bytes (the buffer's contents are then unspecified).
 * Errors: WSTORE_E_NOT_FOUND, WSTORE_E_BUFFER_TOO_SMALL, WSTORE_E_CORRUPT.
 */
int wstore_read(wstore_store *store, const char *model, const char *name,
                void *buf, size_t len, int threads);

/* ---------------------------------------------------------------- experts */

/**
 * Called once per part of every indexed expert, ordered by (layer, expert, part);
 * `part` (e.g. "up") and `tensor` (the tensor's name) are valid only during the call.
 */
typedef int (*wstore_expert_list_fn)(int64_t layer, int64_t expert, const char *part,
                                     const char *tensor, void *ctx);

/**
 * Calls `fn` for every part of every expert of `model` in the store's expert index, or
 * of layer `layer` only when layer >= 0. Stops with WSTORE_E_ABORTED when `fn` returns
 * non-zero.
 */
int wstore_list_experts(wstore_store *store, const char *model, int64_t layer,
                        wstore_expert_list_fn fn, void *ctx);

/* ---------------------------------------------------------------- expert residency */

/** A byte-budgeted cache of one model's experts. Opaque. */
typedef struct wstore_residency wstore_residency;
/** One resident expert, pinned: never evicted while the handle exists. Opaque. */
typedef struct wstore_expert wstore_expert;

/**
 * Opens a residency manager over the expert index of `model` in `store`, holding at
 * most `budget_bytes` of expert bytes (resident and in flight) at any time.
 *   policy   "adaptive" (the default, also for NULL), "lru", "lru-per-layer", "shallow", "lfu"
 *   loaders  background threads serving prefetch hints (<= 0: 2)
 *   wait_ms  how long wstore_expert_acquire waits for a release when everything in the
 *            budget is pinned: 0 fails at once, < 0 means 30000
 * The manager keeps the store open until it is closed.
 * Errors: WSTORE_E_NOT_FOUND when the model has no indexed experts;
 * WSTORE_E_INVALID_ARGUMENT for an unknown policy or a negative budget.
 */
int wstore_residency_open(wstore_store *store, const char *model, int64_t budget_bytes,
                          const char *policy, int loaders, int64_t wait_ms,
                          wstore_residency **out);

/**
 * Closes a manager; NULL is ignored. Expert handles still held stay valid (their bytes
 * included) until each is released; the memory goes when the last one is.
 * Prefetch loads already running finish in the background after the close.
 */
void wstore_residency_close(wstore_residency *residency);

/** One part of a resident expert. */
typedef struct wstore_expert_part {
    const char *name;  /**< the part name, e.g. "down", "gate", "up" */
    const void *data;  /**< its decoded bytes, 64-byte aligned, read-only by convention */
    size_t size;       /**< bytes */
} wstore_expert_part;

/**
 * Returns expert `expert` of layer `layer`, pinned, in *out: loads it first if needed,
 * blocking the calling thread. A hit pins lock-free and waits for no other thread (the
 * handle itself takes two small allocations). Concurrent acquires of one expert share
 * one load. Release the handle as soon as the layer is computed.
 * Errors: WSTORE_E_NOT_FOUND (not indexed); WSTORE_E_BUDGET (larger than the budget,
 * or the budget stayed all pinned for wait_ms); WSTORE_E_CORRUPT (a damaged record).
 */
int wstore_expert_acquire(wstore_residency *residency, int64_t layer, int64_t expert,
                          wstore_expert **out);

/**
 * The parts of a pinned expert, sorted by name: *parts points at *count entries.
 * The array, the names and the bytes are owned by the handle and valid until
 * wstore_expert_release(expert); the bytes are the manager's own buffer (decoded, not in
 * the memory map), so holding a handle never holds a store snapshot open.
 */
int wstore_expert_parts(const wstore_expert *expert, const wstore_expert_part **parts, size_t *count);

/**
 * The part named `part` of a pinned expert: *data and *size, valid until
 * wstore_expert_release(expert). Errors: WSTORE_E_NOT_FOUND when it has no such part.
 */
int wstore_expert_part_by_name(const wstore_expert *expert, const char *part, const void **data, size_t *size);

/** Unpins an expert; its pointers are invalid from here on. NULL is ignored. Once per handle. */
void wstore_expert_release(wstore_expert *expert);

/**
 * Hints that layer `layer` will probably need `experts[0 ..< count]` soon: those not
 * resident load in the background. Returns at once. Unknown experts are ignored; a hint
 * is dropped when everything in the budget is pinned.
 */
int wstore_residency_prefetch(wstore_residency *residency, int64_t layer,
                              const int64_t *experts, size_t count);

/** A manager's counters, over all layers or one (see wstore_residency_get_stats). */
typedef struct wstore_residency_stats {
    uint64_t demand_hits;        /**< acquires served from memory */
    uint64_t demand_misses;      /**< acquires that loaded, or waited for a load */
    uint64_t prefetch_hits;      /**< first uses of experts a prefetch brought in */
    uint64_t wasted_prefetches;  /**< prefetched experts evicted unused */
    uint64_t demand_loads;       /**< loads for acquires */
    uint64_t prefetch_loads;     /**< loads for prefetch hints */
    uint64_t bytes_loaded;       /**< bytes decoded or copied into memory */
    uint64_t wait_ns;            /**< nanoseconds acquires spent waiting */
    /* The fields below are manager-wide, whatever layer was asked for. */
    uint64_t coalesced_waits;    /**< acquires that joined a load already in flight */
    uint64_t dropped_prefetches; /**< hints dropped because the budget was all pinned */
    uint64_t evictions;          /**< experts evicted */
    uint64_t resident_bytes;     /**< bytes resident or reserved by loads now */
    uint64_t peak_resident_bytes;/**< the most ever at once; never above budget */
    uint64_t budget;             /**< the byte budget */
    uint64_t expert_bytes;       /**< bytes of the largest expert */
    int64_t layers;              /**< layers in the expert index */
    int64_t experts_per_layer;   /**< experts per layer in the expert index */
} wstore_residency_stats;

/**
 * Fills *out with the manager's counters so far: summed over every layer when
 * layer < 0, else of layer `layer` only. Errors: WSTORE_E_INVALID_ARGUMENT for a layer
 * out of range.
 */
int wstore_residency_get_stats(wstore_residency *residency, int64_t layer, wstore_residency_stats *out);

#ifdef __cplusplus
}
#endif

#endif /* WSTORE_H */
