/*
 * wstore.h: the C ABI of wstore, for inference engines written in C, C++, Python (ctypes,
 * cffi) or anything else that calls C. Link with -lwstore-c: libwstore-c.so is the `wstore-c`
 * library product of the Swift package (see docs/C-ABI.md for building and an example).
 *
 * The model
 * ---------
 * - Every object is an opaque handle: wstore_store (an open store), wstore_residency (an
 *   expert residency manager over one model of a store), wstore_expert (one pinned
 *   resident expert) and wstore_kv (an open KV cache store). The caller owns every handle
 *   an out-parameter returns and gives it back with the matching close/release function.
 * - Handles fail loudly. A handle is a tagged token, not a pointer to freed memory: a
 *   handle used after its close or release, released or closed twice, or passed where
 *   another kind is expected, is refused with WSTORE_E_INVALID_HANDLE (never a crash, a
 *   hang or silence). wstore never dereferences a closed handle. Do not compare a handle
 *   with anything but NULL or do arithmetic on it.
 * - Every function that can fail returns an int status: WSTORE_OK (0) or one of the
 *   negative WSTORE_E_* codes below. On failure, out-parameters are left untouched and
 *   wstore_last_error() gives a one-line message a user can act on.
 * - No pointer wstore hands out outlives what keeps it alive, and each function says what
 *   that is: bytes in the memory map are lent to a callback and valid only during it;
 *   bytes of a resident expert are valid until that expert's handle is released.
 * - A `model` argument names the model namespace inside the store. NULL names the only
 *   model of a store that holds exactly one (as `wstore pack DIR` writes: the model is
 *   named after DIR), else the model "default". A model the store does not hold is
 *   WSTORE_E_NOT_FOUND, and the message lists the models it does hold.
 *   Strings passed in are NUL-terminated UTF-8 and only read during the call.
 *
 * Thread-safety: wstore_store, wstore_residency and wstore_kv handles may be used from
 * any number of threads at once, except that closing one must not race another call on
 * the same handle (a call already running on a handle being closed is the caller's bug,
 * as for free(); a call made after the close is refused). A wstore_expert handle may be
 * read from any thread and released from any thread; releasing it must not race a call
 * on that same expert handle.
 * Callbacks run on the calling thread, before the call returns; they may call wstore
 * functions themselves (read snapshots nest). A callback must not unwind through wstore
 * (no longjmp, no C++ exception): return non-zero to stop instead.
 *
 * NULL handles and NULL required pointers are WSTORE_E_INVALID_ARGUMENT; closed,
 * released or wrong-kind handles are WSTORE_E_INVALID_HANDLE.
 */
#ifndef WSTORE_H
#define WSTORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** The ABI version of this header; wstore_abi_version() gives the library's. */
#define WSTORE_ABI_VERSION 2

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
    WSTORE_E_INTERNAL = -11,
    /** A handle already closed or released, or not of the kind the call takes. */
    WSTORE_E_INVALID_HANDLE = -12
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
 * Closes a store handle; NULL is ignored (WSTORE_OK). Residency managers opened on it keep
 * the store open until they are closed too. Pointers lent by callbacks are already gone
 * (they never outlive their callback). Errors: WSTORE_E_INVALID_HANDLE when already closed.
 */
int wstore_close(wstore_store *store);

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
 *   policy   "leader" (the default, also for NULL), "forecast", "adaptive", "lru", "lru-per-layer",
 *            "shallow", "lfu", "arc", "slru", "lrfu", "window", "least-stale"
 *   loaders  background threads serving prefetch hints (<= 0: 2)
 *   wait_ms  how long wstore_expert_acquire waits for a release when everything in the
 *            budget is pinned: 0 fails at once, < 0 means 30000
 * The manager keeps the store open until it is closed.
 * Errors: WSTORE_E_NOT_FOUND when the model has no indexed experts;
 * WSTORE_E_INVALID_ARGUMENT for an unknown policy or a negative budget; WSTORE_E_BUDGET
 * when the budget cannot hold the largest expert (refused here, not at the first acquire).
 */
int wstore_residency_open(wstore_store *store, const char *model, int64_t budget_bytes,
                          const char *policy, int loaders, int64_t wait_ms,
                          wstore_residency **out);

/**
 * Closes a manager; NULL is ignored. Expert handles still held stay valid (their bytes,
 * part names and shapes included) until each is released; the memory goes when the last
 * one is. Prefetch loads already running finish in the background after the close.
 * Errors: WSTORE_E_INVALID_HANDLE when already closed.
 */
int wstore_residency_close(wstore_residency *residency);

/**
 * One part of a resident expert. Every pointer in it is owned by the expert handle it
 * came from and valid until that handle is released (wstore_expert_release), from any
 * thread; the struct itself may be copied freely (the copies' pointers have the same
 * lifetime).
 */
typedef struct wstore_expert_part {
    const char *name;     /**< the part name, e.g. "down", "gate", "up" */
    const void *data;     /**< its decoded bytes, 64-byte aligned. READ-ONLY: the pages are
                               mprotect'ed after the load, so a write through this pointer
                               faults at once (SIGSEGV) instead of corrupting later readers */
    size_t size;          /**< bytes */
    int32_t dtype;        /**< an enum wstore_dtype code */
    int32_t rank;         /**< entries of shape */
    const int64_t *shape; /**< dimensions, outermost first (C order) */
} wstore_expert_part;

/**
 * Returns expert `expert` of layer `layer`, pinned, in *out: loads it first if needed,
 * blocking the calling thread. A hit pins lock-free and waits for no other thread (the
 * handle itself takes one small allocation). Concurrent acquires of one expert share
 * one load. When the budget is all pinned the thread sleeps (no CPU) until a release
 * makes room, up to wait_ms. Release the handle as soon as the layer is computed.
 * A thread that needs several experts of a layer at once should use
 * wstore_expert_acquire_many: holding one while waiting for another can starve.
 * Errors: WSTORE_E_NOT_FOUND (not indexed); WSTORE_E_BUDGET (the budget stayed all
 * pinned for wait_ms); WSTORE_E_CORRUPT (a damaged record); WSTORE_E_INVALID_HANDLE.
 */
int wstore_expert_acquire(wstore_residency *residency, int64_t layer, int64_t expert,
                          wstore_expert **out);

/**
 * Pins experts `experts[0 ..< count]` of layer `layer` all at once, or none: room for
 * the whole set is reserved together, and while waiting for room nothing of the set is
 * held, so threads that each need a set (a token's top-k) cannot each hold part of what
 * another needs. On success out[i] is the handle of experts[i] (release each one, in any
 * order, from any thread) and, when `hits` is not NULL, hits[i] is 1 if experts[i] was
 * resident, else 0. `out` and `hits` are the caller's arrays of `count` entries.
 * Errors: as wstore_expert_acquire; WSTORE_E_BUDGET when the set alone exceeds the
 * budget; WSTORE_E_INVALID_ARGUMENT for an expert listed twice. On error no expert of
 * the set is pinned and `out` is untouched.
 */
int wstore_expert_acquire_many(wstore_residency *residency, int64_t layer, const int64_t *experts,
                               size_t count, wstore_expert **out, int *hits);

/** Whether the acquire that made `expert` found it resident: *hit is 1 for a hit, 0 for a miss. */
int wstore_expert_hit(const wstore_expert *expert, int *hit);

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

/**
 * Unpins an expert; its pointers (data, parts array, names, shapes) are invalid from here
 * on. NULL is ignored. Errors: WSTORE_E_INVALID_HANDLE when already released.
 */
int wstore_expert_release(wstore_expert *expert);

/**
 * Hints that layer `layer` will probably need `experts[0 ..< count]` soon: those not
 * resident load in the background. Returns at once; a hint is dropped when everything
 * in the budget is pinned. Errors: WSTORE_E_NOT_FOUND when some experts of the hint
 * (or the layer) are not in the expert index: the message lists them, and the others
 * were still queued.
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
    /* Of the layer asked for (every layer when layer < 0): what is resident now, so an
     * engine sees how the policy splits the budget between layers. */
    uint64_t layer_resident_experts; /**< experts resident now */
    uint64_t layer_resident_bytes;   /**< their bytes */
} wstore_residency_stats;

/**
 * Fills *out with the manager's counters so far: summed over every layer when
 * layer < 0, else of layer `layer` only. Errors: WSTORE_E_INVALID_ARGUMENT for a layer
 * out of range.
 */
int wstore_residency_get_stats(wstore_residency *residency, int64_t layer, wstore_residency_stats *out);

/**
 * Layer `layer`'s residency mask: bit e of words[e / 64] (bit e % 64) is 1 when expert e
 * is resident now. Read lock-free, allocating nothing: a snapshot that may be stale by the
 * time it is read (acquire what you run). Writes min(n_words, (experts + 63) / 64) words
 * and sets *written (may be NULL) to that count. Errors: WSTORE_E_INVALID_ARGUMENT for a
 * layer out of range or a NULL `words` with n_words > 0.
 */
int wstore_residency_mask(wstore_residency *residency, int64_t layer, uint64_t *words, size_t n_words,
                          size_t *written);

/**
 * Cache-aware routing for layer `layer`: given the router's candidates `experts[0 ..< n]`
 * and their probabilities `probs` (e.g. its top 2k), writes the k experts to run into
 * out_experts[0 ..< k]: the top-k by probability, after swapping each non-resident pick
 * (never the top-1) for the most probable resident candidate outside the picks whose
 * probability is at least (1 - tolerance) times the pick's. k <= 0 means the model's
 * top-k. *swapped (may be NULL) counts the swaps, *mass_given_up (may be NULL) the router
 * probability given up. The residency mask is read once, lock-free; nothing is pinned.
 * Errors: WSTORE_E_INVALID_ARGUMENT for a layer out of range, NULL arrays, k > n, or a
 * tolerance outside [0, 1].
 */
int wstore_residency_route(wstore_residency *residency, int64_t layer, const int32_t *experts, const float *probs,
                           size_t n, int32_t k, double tolerance, int32_t *out_experts, int32_t *swapped,
                           double *mass_given_up);

/**
 * Reports the router's candidates for the token layer `layer` just routed,
 * `experts[0 ..< n]` with their probabilities `probs` (e.g. its top 2k, the picked experts
 * among them, highest first), after acquiring the picks. The residency policy takes them
 * as evidence of how often each candidate is wanted (the default counts a runner-up the
 * router nearly chose as part of a pick). Nothing is loaded or pinned. Errors:
 * WSTORE_E_INVALID_ARGUMENT for a layer out of range, NULL arrays with n > 0, a repeated
 * expert, or a negative or non-finite probability (nothing is counted);
 * WSTORE_E_NOT_FOUND when some experts are not in the expert index: the message lists
 * them, and the others were counted.
 */
int wstore_residency_observe(wstore_residency *residency, int64_t layer, const int32_t *experts, const float *probs,
                             size_t n);

/* ---------------------------------------------------------------- expert precision */

/**
 * Precisions of a stored copy of an expert part (format-spec/FORMAT.md §8): the lossless
 * record, or a quantized variant stored beside it by `wstore pack --expert-variants`.
 * Ordered by fidelity: exact > q8_0 > q4_0.
 */
enum wstore_precision {
    /** As a minimum: any stored copy (whatever is fastest now). Never a copy's precision. */
    WSTORE_PRECISION_ANY = -1,
    /** The lossless record, in the part's own dtype. */
    WSTORE_PRECISION_EXACT = 0,
    /** GGML Q8_0 blocks: per 32 elements an f16 scale d, then 32 int8 q; value = q·d. */
    WSTORE_PRECISION_Q8_0 = 1,
    /** GGML Q4_0 blocks: per 32 elements an f16 scale d, then 16 bytes, byte j holding element
     *  j in its low nibble and element j + 16 in its high nibble; value = (nibble − 8)·d. */
    WSTORE_PRECISION_Q4_0 = 2
};

/** Flags of wstore_expert_acquire_precision. */
enum wstore_acquire_flags {
    /** A copy below exact may be upgraded to exact in the background (when the policy calls
     *  the expert hot); later acquires then get the exact copy. A handle's bytes never change. */
    WSTORE_ACQUIRE_UPGRADE = 1
};

/**
 * wstore_expert_acquire with a precision request: returns a pinned copy of the expert at
 * least as precise as `min_precision` (WSTORE_PRECISION_ANY accepts any). The most precise
 * resident copy accepted is a hit; else a load already in flight of an accepted copy is
 * joined; else the smallest accepted copy stored is loaded (a fraction of the bytes).
 * wstore_expert_precision says which copy the handle holds; for a copy below exact, parts
 * that have a variant hold its raw blocks (wstore_expert_part.dtype WSTORE_DTYPE_GGML, see
 * wstore_expert_part_blocks) and the others their exact bytes. WSTORE_PRECISION_EXACT with
 * flags 0 is wstore_expert_acquire.
 * Errors: as wstore_expert_acquire; WSTORE_E_INVALID_ARGUMENT for an unknown precision or flag.
 */
int wstore_expert_acquire_precision(wstore_residency *residency, int64_t layer, int64_t expert,
                                    int32_t min_precision, uint32_t flags, wstore_expert **out);

/**
 * wstore_expert_acquire_many with a precision request (as wstore_expert_acquire_precision):
 * each expert of the set is pinned at the most precise copy accepted that is resident, or
 * loaded at the smallest accepted one; the set may mix precisions.
 */
int wstore_expert_acquire_many_precision(wstore_residency *residency, int64_t layer, const int64_t *experts,
                                         size_t count, int32_t min_precision, uint32_t flags,
                                         wstore_expert **out, int *hits);

/** The precision of the copy `expert` holds (an enum wstore_precision code, never ANY) in *precision. */
int wstore_expert_precision(const wstore_expert *expert, int32_t *precision);

/**
 * How one part of a pinned expert is laid out: its precision and, for blocks, where the
 * scale and the quants sit in each block. Blocks run along the last dimension of `shape`
 * (C order); block b covers elements 32·b ..< 32·b + 32 of the flattened part.
 * value = (q − zero_point) · scale, with q the quant read as `quant_signed` integers of
 * `quant_bits` bits (Q4_0: the low nibbles of bytes 0..15 are elements 0..15, the high
 * nibbles elements 16..31). For an exact part the block fields are 0.
 */
typedef struct wstore_part_blocks {
    int32_t precision;      /**< an enum wstore_precision code */
    int32_t dtype;          /**< an enum wstore_dtype code: the part's own, or WSTORE_DTYPE_GGML */
    uint32_t ggml_type;     /**< 8 (Q8_0), 2 (Q4_0); 0 for exact */
    int32_t block_elements; /**< 32 */
    int32_t block_bytes;    /**< 34 (Q8_0), 18 (Q4_0) */
    int32_t scale_offset;   /**< byte offset of the scale in a block: 0 */
    int32_t scale_dtype;    /**< WSTORE_DTYPE_F16 */
    int32_t quant_offset;   /**< byte offset of the quants in a block: 2 */
    int32_t quant_bits;     /**< 8 (Q8_0), 4 (Q4_0) */
    int32_t quant_signed;   /**< 1 (Q8_0: int8), 0 (Q4_0: unsigned nibbles) */
    int32_t zero_point;     /**< 0 (Q8_0), 8 (Q4_0) */
    int64_t elements;       /**< logical elements of the part */
    int64_t blocks;         /**< elements / block_elements; 0 for exact */
} wstore_part_blocks;

/** Fills *out with the layout of part `part` of a pinned expert. Errors: WSTORE_E_NOT_FOUND (no such part). */
int wstore_expert_part_blocks(const wstore_expert *expert, const char *part, wstore_part_blocks *out);

/**
 * Writes part `part`'s values as `dtype` (WSTORE_DTYPE_F32, _F16 or _BF16) into the first
 * elements × the dtype's size bytes of `out` (out_size at least that): blocks are dequantized by the
 * vectorized kernel (bit-identical to ggml's reference), exact f32/f16/bf16 parts converted
 * (copied when already `dtype`). Safe from many threads on one handle.
 * Errors: WSTORE_E_NOT_FOUND (no such part); WSTORE_E_INVALID_ARGUMENT for another dtype, a
 * NULL `out`, or an exact part of another dtype; WSTORE_E_BUFFER_TOO_SMALL when out_size is
 * smaller.
 */
int wstore_expert_dequantize(const wstore_expert *expert, const char *part, int32_t dtype, void *out,
                             size_t out_size);

/* ---------------------------------------------------------------- KV cache */

/**
 * A KV cache store: its own directory (an LMDB environment, format-spec/KV.md), holding
 * the keys and values of token prefixes in chunks of `chunk_tokens` tokens, found by
 * chained prefix hashes of (model, salt, token ids). Opaque.
 *
 * Thread-safety: any number of threads may call wstore_kv_lookup and wstore_kv_probe at
 * once, in parallel with each other and with one wstore_kv_store (lookups run on LMDB
 * read transactions; stores are serialised by LMDB). Closing must not race another call
 * on the handle.
 */
typedef struct wstore_kv wstore_kv;

/** How KV chunks are stored (format-spec/KV.md §4). */
enum wstore_kv_codec {
    /** Byte-grouped zstd, exact (the default, 0). */
    WSTORE_KV_LOSSLESS = 0,
    /** The bytes as they are, no compression: the fastest lookup, the largest store. */
    WSTORE_KV_RAW = 1,
    /** KIVI-style quantization (keys per channel, values per token) under zstd: lossy. */
    WSTORE_KV_INT2 = 2,
    WSTORE_KV_INT4 = 4,
    WSTORE_KV_INT8 = 8
};

/**
 * Settings of a new KV store, fixed at creation. All-zero (`wstore_kv_options o = {0};`)
 * is valid and means every default.
 */
typedef struct wstore_kv_options {
    int64_t chunk_tokens;   /**< tokens per chunk; 0: 256 */
    int64_t budget_bytes;   /**< most stored bytes kept (least recently used leaves evicted first); 0: no limit */
    int64_t max_chunks;     /**< most chunks kept; 0: no limit */
    int32_t codec;          /**< an enum wstore_kv_codec code; 0 is lossless */
    int32_t threads;        /**< threads encoding/decoding one chunk's tensors; <= 0: 1 */
    int32_t kivi_group;     /**< quantization group for the int codecs; 0: 64 */
    int32_t kivi_residual;  /**< newest tokens of each chunk kept unquantized by the int codecs */
} wstore_kv_options;

/**
 * Creates a KV store in directory `path` (made if missing; it must not hold a store yet)
 * with `options` (NULL: every default) and sets *out to a writable handle.
 * Errors: WSTORE_E_INVALID_ARGUMENT for bad options or a directory that holds a store
 * already; WSTORE_E_IO.
 */
int wstore_kv_create(const char *path, const wstore_kv_options *options, wstore_kv **out);

/**
 * Opens the KV store in directory `path`; `read_only` non-zero refuses stores (lookups
 * and probes only); `threads` decode one chunk's tensors (<= 0: 1). Opening one path
 * several times in a process shares one environment. Errors: WSTORE_E_NOT_A_STORE,
 * WSTORE_E_NEWER_FORMAT, WSTORE_E_IO.
 */
int wstore_kv_open(const char *path, int read_only, int threads, wstore_kv **out);

/**
 * Closes a KV handle; NULL is ignored. A writable handle first writes the last-use stamps
 * of its lookups (see wstore_kv_lookup) in one transaction, and a deferred one
 * (wstore_kv_set_durability) syncs what it wrote. Errors: WSTORE_E_INVALID_HANDLE when
 * already closed (the handle is closed even when writing the stamps or the sync fails,
 * which is then reported: WSTORE_E_IO).
 */
int wstore_kv_close(wstore_kv *kv);

/** How a KV handle's writes reach the disk (format-spec/KV.md §9). */
enum wstore_kv_durability {
    /** Every write (a store, a flush of use stamps, chunks kept from the remote tier)
     *  commits with a sync: once it returns it survives a system crash or power loss.
     *  Every handle starts so. */
    WSTORE_KV_SYNCED = 0,
    /** Writes commit without a sync: a store costs its encode and a copy into the page
     *  cache, not the disk's write rate. A crash of the process loses nothing committed.
     *  A system crash or power loss may leave the store torn: the next writable open
     *  after the reboot empties it (a warning on stderr), and a read-only open refuses it
     *  (WSTORE_E_CORRUPT) until then. wstore_kv_sync makes what was committed durable;
     *  wstore_kv_close and the last deferred handle of a process to go sync too. */
    WSTORE_KV_DEFERRED = 1
};

/**
 * Chooses how the writes of `kv` reach the disk from now on: an enum wstore_kv_durability
 * code. Going deferred first writes (and syncs) a marker file beside the store's data file;
 * going back to synced syncs everything committed so far. Errors: WSTORE_E_INVALID_ARGUMENT
 * for an unknown code or WSTORE_KV_DEFERRED on a read-only handle, WSTORE_E_IO.
 */
int wstore_kv_set_durability(wstore_kv *kv, int durability);

/** Makes every commit of the store so far durable (fsync of its data file); needed only
 *  after deferred writes. Nothing to do on a read-only handle. Errors: WSTORE_E_IO. */
int wstore_kv_sync(wstore_kv *kv);

/**
 * The keys and values of one layer in the engine's own memory: element (token t, head h,
 * dim d) of K is at  (char *)k + t * token_stride + h * head_stride + d * element_size,
 * and likewise for V. Each head's head_dim elements of one token are contiguous.
 *   [tokens][heads][head_dim] layout: token_stride = heads * head_dim * size, head_stride = 0
 *   [heads][tokens][head_dim] layout: token_stride = head_dim * size, head_stride = capacity * head_dim * size
 * For wstore_kv_store k and v are read during the call only; for wstore_kv_lookup they are
 * written during the call only (wstore keeps no pointer after it returns).
 */
typedef struct wstore_kv_layer {
    void *k;               /**< keys of token 0, head 0 */
    void *v;               /**< values of token 0, head 0 */
    int32_t dtype;         /**< WSTORE_DTYPE_F16, WSTORE_DTYPE_BF16 or WSTORE_DTYPE_F32 */
    int32_t kv_heads;      /**< KV heads */
    int32_t head_dim;      /**< elements per head and token */
    int32_t reserved;      /**< 0 */
    int64_t token_stride;  /**< bytes from token t to token t + 1 of one head */
    int64_t head_stride;   /**< bytes from head h to head h + 1 at one token; 0: head_dim * element size */
} wstore_kv_layer;

/**
 * Stores the KV of `tokens[0 ..< n_tokens]` of `model` (NULL: "default") under `salt`
 * (NULL: ""): writes the whole chunks that are missing (a trailing partial chunk is not
 * stored), marks the present ones used, then evicts least recently used leaves while over
 * the budget. `layers[0 ..< n_layers]` describe the engine's buffers, which must hold
 * n_tokens tokens; every layer has the same dtype, heads and head_dim. *cached_tokens
 * (may be NULL) is how many leading tokens are cached now, a multiple of chunk_tokens.
 * Errors: WSTORE_E_INVALID_ARGUMENT (a read-only handle, bad layer descriptions, a dtype
 * or shape that differs from chunks already stored for the same prefix), WSTORE_E_IO.
 */
int wstore_kv_store(wstore_kv *kv, const char *model, const char *salt, const uint32_t *tokens, size_t n_tokens,
                    const wstore_kv_layer *layers, size_t n_layers, size_t *cached_tokens);

/**
 * The longest cached prefix of `tokens[0 ..< n_tokens]` in *cached_tokens (a multiple of
 * chunk_tokens), decoding nothing and writing nothing. Errors: WSTORE_E_IO.
 */
int wstore_kv_probe(wstore_kv *kv, const char *model, const char *salt, const uint32_t *tokens, size_t n_tokens,
                    size_t *cached_tokens);

/** What wstore_kv_lookup delivered. A plain value: the caller owns it. */
typedef struct wstore_kv_lookup_result {
    uint64_t tokens;   /**< leading tokens written into the caller's buffers (whole chunks) */
    uint64_t chunks;   /**< chunks delivered */
    int32_t damaged;   /**< 1 when the prefix ended at a damaged chunk (see wstore_last_error()), else 0 */
    int32_t reserved;
} wstore_kv_lookup_result;

/**
 * Finds the longest cached prefix of `tokens[0 ..< n_tokens]` and decodes it directly
 * into the caller's buffers `layers[0 ..< n_layers]` (which must hold
 * n_tokens tokens at their strides, with the dtype, heads and head_dim the chunks were
 * stored with), every checksum checked, on a read transaction. Tokens past the prefix
 * are not written, except by a remote tier: its chunks are decoded in place as they
 * arrive, so after one that failed its checks (a miss, counted in damaged_remote) the
 * rows past the prefix delivered may hold unspecified bytes. *out says how many tokens
 * were delivered.
 * A damaged chunk ends the prefix there: the chunks before it are delivered, out->damaged
 * is 1 and wstore_last_error() names the chunk and the damage, and the call still returns
 * WSTORE_OK (the destination rows of the damaged chunk hold unspecified bytes).
 * Lossy codecs deliver their reconstruction. Last-use stamps for eviction are kept in
 * memory by the handle and written by its next wstore_kv_store or its close, never by a
 * lookup (format-spec/KV.md §5 says what survives a restart).
 * Errors: WSTORE_E_INVALID_ARGUMENT when the layers do not match the stored chunks;
 * WSTORE_E_IO.
 */
int wstore_kv_lookup(wstore_kv *kv, const char *model, const char *salt, const uint32_t *tokens, size_t n_tokens,
                     const wstore_kv_layer *layers, size_t n_layers, wstore_kv_lookup_result *out);

/** A KV store's totals and this handle's counters. */
typedef struct wstore_kv_stats {
    uint64_t chunks;          /**< chunks held */
    uint64_t leaves;          /**< chunks no other chunk extends */
    uint64_t stored_bytes;    /**< stored bytes of every chunk */
    uint64_t raw_bytes;       /**< raw KV bytes of every chunk */
    int64_t chunk_tokens;     /**< the store's chunk size */
    int32_t codec;            /**< its enum wstore_kv_codec code */
    int32_t read_only;        /**< 1 for a read-only handle */
    /* Counters of this handle since it was opened. */
    uint64_t lookups;         /**< wstore_kv_lookup calls */
    uint64_t lookup_tokens;   /**< tokens asked for by lookups */
    uint64_t hit_tokens;      /**< tokens delivered by lookups */
    uint64_t damaged_chunks;  /**< lookups that ended at a damaged chunk */
    uint64_t reserved[4];     /**< 0; room for more tiers */
} wstore_kv_stats;

/** Fills *out with the store's totals (one read transaction) and the handle's counters. */
int wstore_kv_get_stats(wstore_kv *kv, wstore_kv_stats *out);

/* ------------------------------------------------- KV cache: the remote tier */

/**
 * A shared remote tier on Redis (format-spec/KV.md §8): a lookup continues the local
 * prefix from Redis, chunks found there are checked (bound to their key) and kept locally,
 * and stores are sent to Redis in the background through a bounded queue that never blocks
 * (full: dropped and counted). A remote tier that is down is not an error: the store works
 * from its local tier, warns once on stderr and reconnects with backoff.
 *
 * Lifetime: the strings are read during the call only.
 */
typedef struct wstore_kv_remote {
    /** `redis://[user:password@]host:port`, several separated by commas: one URL is one
     *  server, several are seed nodes of one Redis Cluster. Required. */
    const char *urls;
    /** Prefix of every Redis key, so deployments can share one Redis; NULL: "wstore:kv:". */
    const char *key_namespace;
    /** Most time one connect or one pipelined batch may take; <= 0: 500 ms. */
    int64_t timeout_ms;
    /** Most chunks waiting to be sent; <= 0: 512. */
    int64_t queue_chunks;
} wstore_kv_remote;

/** wstore_kv_create with a remote tier (`remote` NULL: none). Errors as wstore_kv_create,
 *  and WSTORE_E_INVALID_ARGUMENT for a URL that is not redis://host:port. */
int wstore_kv_create_remote(const char *path, const wstore_kv_options *options, const wstore_kv_remote *remote,
                            wstore_kv **out);

/** wstore_kv_open with a remote tier (`remote` NULL: none). Errors as wstore_kv_open, and
 *  WSTORE_E_INVALID_ARGUMENT for a URL that is not redis://host:port. */
int wstore_kv_open_remote(const char *path, int read_only, int threads, const wstore_kv_remote *remote,
                          wstore_kv **out);

/** Counters of a KV handle's tiers since it was opened. */
typedef struct wstore_kv_tier_stats {
    int32_t has_remote;          /**< 1 when the handle has a remote tier (else every field below is 0) */
    int32_t connected;           /**< 1 when the last remote operation succeeded */
    uint64_t lookups;            /**< lookups made */
    uint64_t local_hit_chunks;   /**< chunks lookups found in the local tier */
    uint64_t remote_hit_chunks;  /**< chunks lookups found in the remote tier */
    uint64_t bytes_fetched;      /**< value bytes received from Redis */
    uint64_t bytes_sent;         /**< value bytes sent to Redis */
    uint64_t sent_chunks;        /**< chunks Redis accepted */
    uint64_t already_remote;     /**< chunks not sent because Redis held them */
    uint64_t remote_errors;      /**< failed connects and command batches */
    uint64_t damaged_remote;     /**< remote values that failed their checks: misses, never returned */
    uint64_t queue_drops;        /**< chunks dropped because the send queue was full */
    uint64_t unsent_chunks;      /**< chunks dropped because Redis was down when their turn came */
    uint64_t reconnects;         /**< successful connects after the tier was down */
    uint64_t queued;             /**< chunks waiting in the send queue now */
    uint64_t reserved[4];        /**< 0 */
} wstore_kv_tier_stats;

/** Fills *out with the tier counters of `kv`. */
int wstore_kv_get_tier_stats(wstore_kv *kv, wstore_kv_tier_stats *out);

/** Waits until every chunk queued for the remote tier is sent or dropped, at most
 *  `timeout_ms` milliseconds; sets *drained to 1 when the queue emptied (NULL: not told). */
int wstore_kv_flush_remote(wstore_kv *kv, int64_t timeout_ms, int *drained);

#ifdef __cplusplus
}
#endif

#endif /* WSTORE_H */
