/*
 * abi_check: exercises libwstore-c.so through include/wstore.h the way an engine would.
 * Run by CABITests against a store the test wrote:
 *
 *   abi_check STORE NOT_A_STORE_DIR
 *
 * STORE holds model "m" (see CABITests.swift): "embed" f32 [4, 8] raw, byte i = i*7+3;
 * "big" bf16 [256, 64] zstd, byte i = (i*13 + i/256) & 0xff; a 2 x 2 expert index with
 * parts down, gate, up of 256 bf16 each, byte i of part p of expert (l, e) =
 * l*31 + e*7 + p*3 + i*13 + i/256. Prints one line per failed check and exits 1 if any.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/wait.h>
#include <unistd.h>

#include "wstore.h"

#include "check.h"

static unsigned char embed_byte(size_t i) { return (unsigned char)(i * 7 + 3); }
static unsigned char big_byte(size_t i) { return (unsigned char)(i * 13 + i / 256); }
static unsigned char expert_byte(int l, int e, int p, size_t i) {
    return (unsigned char)(l * 31 + e * 7 + p * 3 + i * 13 + i / 256);
}

/* ---- callbacks */

struct seen { int calls; int bytes_ok; size_t size; int32_t codec; };

static int check_embed(const void *data, size_t size, const wstore_tensor_info *info, void *ctx) {
    struct seen *s = ctx;
    const unsigned char *b = data;
    s->calls++;
    s->size = size;
    s->codec = info->codec;
    s->bytes_ok = data != NULL;
    for (size_t i = 0; i < size; i++) if (b[i] != embed_byte(i)) s->bytes_ok = 0;
    return 0;
}

static int stop_with_7(const void *data, size_t size, const wstore_tensor_info *info, void *ctx) {
    (void)data; (void)size; (void)info;
    (*(int *)ctx)++;
    return 7;
}

/* A callback may call wstore again: read snapshots nest. */
static int nested_read(const void *data, size_t size, const wstore_tensor_info *info, void *ctx) {
    (void)data; (void)size; (void)info;
    unsigned char buf[128];
    return wstore_read(ctx, "m", "embed", buf, sizeof buf, 1);
}

static int count_tensor(const char *name, const wstore_tensor_info *info, void *ctx) {
    (void)info;
    int *n = ctx;
    if (name && name[0]) (*n)++;
    return 0;
}

static int find_model_m(const char *name, void *ctx) {
    if (strcmp(name, "m") == 0) *(int *)ctx = 1;
    return 0;
}

struct expert_count { int parts; int up_parts; };

static int count_parts(int64_t layer, int64_t expert, const char *part, const char *tensor, void *ctx) {
    struct expert_count *c = ctx;
    char want[64];
    snprintf(want, sizeof want, "l%d.e%d.%s", (int)layer, (int)expert, part);
    if (strcmp(want, tensor) == 0) c->parts++;
    if (strcmp(part, "up") == 0) c->up_parts++;
    return 0;
}

/* An error on another thread leaves this thread's message alone. */
static void *fail_elsewhere(void *store) {
    wstore_tensor_info info;
    int rc = wstore_info(store, "m", "no-such-tensor-on-thread", &info);
    return (void *)(intptr_t)(rc == WSTORE_E_NOT_FOUND && strstr(wstore_last_error(), "no-such-tensor-on-thread") != NULL);
}

/* ---- checks */

static void check_errors_without_store(const char *not_a_store) {
    wstore_store *s = (wstore_store *)0x1;
    CHECK_RC(wstore_open("/nonexistent/wstore/path", &s), WSTORE_E_NOT_A_STORE);
    CHECK(s == (wstore_store *)0x1, "out-parameter changed on failure");
    CHECK(strstr(wstore_last_error(), "is not a wstore store") != NULL, "message: %s", wstore_last_error());
    CHECK_RC(wstore_open(not_a_store, &s), WSTORE_E_NOT_A_STORE);
    CHECK(strstr(wstore_last_error(), "no data.mdb") != NULL, "message: %s", wstore_last_error());
    CHECK(strchr(wstore_last_error(), '\n') == NULL, "message is one line");
    CHECK_RC(wstore_open(NULL, &s), WSTORE_E_INVALID_ARGUMENT);
}

static void check_tensors(wstore_store *st) {
    int version = 0;
    CHECK_RC(wstore_format_version(st, &version), WSTORE_OK);
    CHECK(version >= 1, "format version %d", version);

    int64_t layers = 0, epl = 0, topk = 0;
    CHECK_RC(wstore_model_info(st, "m", &layers, &epl, &topk), WSTORE_OK);
    CHECK(layers == 2 && epl == 2 && topk == 2, "model info %lld %lld %lld", (long long)layers, (long long)epl, (long long)topk);
    CHECK_RC(wstore_model_info(st, "nope", &layers, NULL, NULL), WSTORE_E_NOT_FOUND);

    int has_m = 0;
    CHECK_RC(wstore_list_models(st, find_model_m, &has_m), WSTORE_OK);
    CHECK(has_m, "model m listed");

    wstore_tensor_info info;
    memset(&info, 0xAB, sizeof info);
    CHECK_RC(wstore_info(st, "m", "embed", &info), WSTORE_OK);
    CHECK(info.dtype == WSTORE_DTYPE_F32 && info.codec == WSTORE_CODEC_RAW && info.rank == 2, "dtype %d codec %d rank %d",
          info.dtype, info.codec, info.rank);
    CHECK(info.shape[0] == 4 && info.shape[1] == 8 && info.shape[2] == 0, "shape %lld %lld",
          (long long)info.shape[0], (long long)info.shape[1]);
    CHECK(info.raw_size == 128 && info.ggml_type == 0 && info.checksum != 0, "raw size %llu", (unsigned long long)info.raw_size);

    /* Zero-copy: the bytes in the map are what was written. */
    struct seen seen = {0};
    CHECK_RC(wstore_with_tensor(st, "m", "embed", 0, check_embed, &seen), WSTORE_OK);
    CHECK(seen.calls == 1 && seen.size == 128 && seen.bytes_ok && seen.codec == WSTORE_CODEC_RAW, "callback saw calls %d size %zu ok %d",
          seen.calls, seen.size, seen.bytes_ok);
    memset(&seen, 0, sizeof seen);
    CHECK_RC(wstore_with_tensor(st, "m", "embed", WSTORE_VERIFY, check_embed, &seen), WSTORE_OK);
    CHECK(seen.calls == 1 && seen.bytes_ok, "verified callback");
    CHECK_RC(wstore_with_tensor(st, "m", "embed", 0x80, check_embed, &seen), WSTORE_E_INVALID_ARGUMENT);
    int stops = 0;
    CHECK_RC(wstore_with_tensor(st, "m", "embed", 0, stop_with_7, &stops), WSTORE_E_ABORTED);
    CHECK(stops == 1 && strstr(wstore_last_error(), "returned 7") != NULL, "abort message: %s", wstore_last_error());
    CHECK_RC(wstore_with_tensor(st, "m", "embed", 0, nested_read, st), WSTORE_OK);
    CHECK_RC(wstore_with_tensor(st, "m", "big", 0, check_embed, &seen), WSTORE_E_NOT_RAW);
    CHECK(strstr(wstore_last_error(), "zstd") != NULL, "not-raw message: %s", wstore_last_error());

    /* Missing tensor. */
    CHECK_RC(wstore_info(st, "m", "missing.weight", &info), WSTORE_E_NOT_FOUND);
    CHECK(strstr(wstore_last_error(), "missing.weight") != NULL, "not-found message: %s", wstore_last_error());
    CHECK_RC(wstore_with_tensor(st, "m", "missing.weight", 0, check_embed, &seen), WSTORE_E_NOT_FOUND);
    /* NULL names the only model of a one-model store. */
    CHECK_RC(wstore_info(st, NULL, "embed", &info), WSTORE_OK);
    CHECK(info.raw_size == 128, "NULL model reads model m");
    /* An unknown model's message lists the models there are. */
    CHECK_RC(wstore_info(st, "mixtral", "embed", &info), WSTORE_E_NOT_FOUND);
    CHECK(strstr(wstore_last_error(), "mixtral") && strstr(wstore_last_error(), "holds: m"), "unknown model: %s",
          wstore_last_error());

    /* Decode into the caller's buffer. */
    CHECK_RC(wstore_info(st, "m", "big", &info), WSTORE_OK);
    CHECK(info.codec == WSTORE_CODEC_ZSTD && info.dtype == WSTORE_DTYPE_BF16 && info.raw_size == 256 * 64 * 2, "big info");
    size_t n = (size_t)info.raw_size;
    unsigned char *buf = malloc(n + 16);
    memset(buf, 0xEE, n + 16);
    CHECK_RC(wstore_read(st, "m", "big", buf, n + 16, 2), WSTORE_OK);
    int same = 1;
    for (size_t i = 0; i < n; i++) if (buf[i] != big_byte(i)) same = 0;
    CHECK(same, "decoded bytes equal what was written");
    CHECK(buf[n] == 0xEE && buf[n + 15] == 0xEE, "bytes past raw_size untouched");
    CHECK_RC(wstore_read(st, "m", "big", buf, n - 1, 0), WSTORE_E_BUFFER_TOO_SMALL);
    CHECK(strstr(wstore_last_error(), "too small") != NULL, "too-small message: %s", wstore_last_error());
    CHECK_RC(wstore_read(st, "m", "embed", buf, 128, 1), WSTORE_OK);
    same = 1;
    for (size_t i = 0; i < 128; i++) if (buf[i] != embed_byte(i)) same = 0;
    CHECK(same, "raw read equals what was written");
    CHECK_RC(wstore_read(st, "m", "missing.weight", buf, n, 1), WSTORE_E_NOT_FOUND);
    free(buf);

    int count = 0;
    CHECK_RC(wstore_list_tensors(st, "m", count_tensor, &count), WSTORE_OK);
    CHECK(count == 14, "listed %d tensors", count);
    struct expert_count ec = {0};
    CHECK_RC(wstore_list_experts(st, "m", -1, count_parts, &ec), WSTORE_OK);
    CHECK(ec.parts == 12 && ec.up_parts == 4, "expert parts %d, up parts %d", ec.parts, ec.up_parts);
    memset(&ec, 0, sizeof ec);
    CHECK_RC(wstore_list_experts(st, "m", 1, count_parts, &ec), WSTORE_OK);
    CHECK(ec.parts == 6, "layer 1 parts %d", ec.parts);

    /* The last error is per thread. */
    CHECK_RC(wstore_info(st, "m", "main-thread-missing", &info), WSTORE_E_NOT_FOUND);
    pthread_t t;
    void *ok = NULL;
    pthread_create(&t, NULL, fail_elsewhere, st);
    pthread_join(t, &ok);
    CHECK(ok != NULL, "other thread saw its own error");
    CHECK(strstr(wstore_last_error(), "main-thread-missing") != NULL, "main thread message kept: %s", wstore_last_error());
}

static int expert_holds(const wstore_expert *h, int l, int e) {
    const wstore_expert_part *parts = NULL;
    size_t count = 0;
    if (wstore_expert_parts(h, &parts, &count) != WSTORE_OK || count != 3) return 0;
    static const char *names[3] = {"down", "gate", "up"};
    for (int p = 0; p < 3; p++) {
        if (strcmp(parts[p].name, names[p]) != 0 || parts[p].size != 512 || ((uintptr_t)parts[p].data & 63) != 0) return 0;
        if (parts[p].dtype != WSTORE_DTYPE_BF16 || parts[p].rank != 1 || parts[p].shape[0] != 256) return 0;
        const unsigned char *b = parts[p].data;
        for (size_t i = 0; i < parts[p].size; i++) if (b[i] != expert_byte(l, e, p, i)) return 0;
    }
    return 1;
}

static void check_residency(wstore_store *st) {
    wstore_residency *r = NULL;
    CHECK_RC(wstore_residency_open(st, "m", 3072, "bogus", 0, 0, &r), WSTORE_E_INVALID_ARGUMENT);
    CHECK(strstr(wstore_last_error(), "bogus") != NULL, "policy message: %s", wstore_last_error());
    CHECK_RC(wstore_residency_open(st, "nope", 3072, NULL, 0, 0, &r), WSTORE_E_NOT_FOUND);
    /* A budget smaller than the largest expert (1536 bytes) is refused at open. */
    CHECK_RC(wstore_residency_open(st, "m", 1535, NULL, 0, 0, &r), WSTORE_E_BUDGET);
    CHECK(r == NULL && strstr(wstore_last_error(), "1536") != NULL, "small budget: %s", wstore_last_error());
    /* Room for exactly two experts of 3 x 512 bytes; fail at once when all is pinned. */
    CHECK_RC(wstore_residency_open(st, "m", 3072, "lru", 1, 0, &r), WSTORE_OK);
    if (!r) return;

    wstore_expert *a = NULL, *b = NULL, *c = NULL;
    CHECK_RC(wstore_expert_acquire(r, 0, 0, &a), WSTORE_OK);
    CHECK(a && expert_holds(a, 0, 0), "expert (0, 0) bytes");
    CHECK_RC(wstore_expert_acquire(r, 0, 1, &b), WSTORE_OK);
    CHECK(b && expert_holds(b, 0, 1), "expert (0, 1) bytes");

    const void *data = NULL;
    size_t size = 0;
    const wstore_expert_part *parts = NULL;
    size_t count = 0;
    CHECK_RC(wstore_expert_part_by_name(a, "up", &data, &size), WSTORE_OK);
    CHECK_RC(wstore_expert_parts(a, &parts, &count), WSTORE_OK);
    CHECK(count == 3 && data == parts[2].data && size == 512, "part by name is the same bytes");
    CHECK_RC(wstore_expert_part_by_name(a, "w4", &data, &size), WSTORE_E_NOT_FOUND);

    CHECK_RC(wstore_expert_acquire(r, 1, 0, &c), WSTORE_E_BUDGET);
    CHECK(c == NULL && strstr(wstore_last_error(), "pinned") != NULL, "budget message: %s", wstore_last_error());
    CHECK_RC(wstore_expert_acquire(r, 5, 0, &c), WSTORE_E_NOT_FOUND);
    CHECK_RC(wstore_expert_acquire(r, 0, -1, &c), WSTORE_E_NOT_FOUND);

    wstore_expert_release(a); /* unpinned: now evictable */
    CHECK_RC(wstore_expert_acquire(r, 1, 0, &c), WSTORE_OK);
    CHECK(c && expert_holds(c, 1, 0), "expert (1, 0) bytes after eviction");

    int64_t hint[2] = {1, 99};
    CHECK_RC(wstore_residency_prefetch(r, 1, hint, 2), WSTORE_E_NOT_FOUND); /* 99 is reported, 1 still queued */
    CHECK(strstr(wstore_last_error(), "99") != NULL, "bad hint: %s", wstore_last_error());
    CHECK_RC(wstore_residency_prefetch(r, 1, hint, 1), WSTORE_OK);
    CHECK_RC(wstore_residency_prefetch(r, 7, hint, 1), WSTORE_E_NOT_FOUND);
    CHECK_RC(wstore_residency_prefetch(r, 1, NULL, 1), WSTORE_E_INVALID_ARGUMENT);

    /* Router candidates reach the policy and load nothing; bad ones are refused, unknown ones reported. */
    int32_t cand[3] = {1, 0, 5};
    float probs[3] = {0.6f, 0.3f, 0.1f};
    CHECK_RC(wstore_residency_observe(r, 1, cand, probs, 2), WSTORE_OK);
    CHECK_RC(wstore_residency_observe(r, 1, cand, probs, 3), WSTORE_E_NOT_FOUND); /* 5 is reported, 1 and 0 counted */
    CHECK(strstr(wstore_last_error(), "5") != NULL, "bad candidate: %s", wstore_last_error());
    CHECK_RC(wstore_residency_observe(r, 2, cand, probs, 2), WSTORE_E_INVALID_ARGUMENT);
    CHECK_RC(wstore_residency_observe(r, 1, NULL, probs, 2), WSTORE_E_INVALID_ARGUMENT);
    CHECK_RC(wstore_residency_observe(r, 1, cand, NULL, 2), WSTORE_E_INVALID_ARGUMENT);
    float negative[2] = {0.5f, -0.1f};
    CHECK_RC(wstore_residency_observe(r, 1, cand, negative, 2), WSTORE_E_INVALID_ARGUMENT);
    int32_t twice[2] = {1, 1};
    CHECK_RC(wstore_residency_observe(r, 1, twice, probs, 2), WSTORE_E_INVALID_ARGUMENT);
    CHECK_RC(wstore_residency_observe(r, 1, NULL, NULL, 0), WSTORE_OK);

    wstore_residency_stats s;
    CHECK_RC(wstore_residency_get_stats(r, -1, &s), WSTORE_OK);
    /* The acquire refused for the budget counts as a miss without a load. */
    CHECK(s.demand_misses == 4 && s.demand_loads == 3 && s.demand_hits == 0, "misses %llu loads %llu hits %llu",
          (unsigned long long)s.demand_misses, (unsigned long long)s.demand_loads, (unsigned long long)s.demand_hits);
    CHECK(s.evictions >= 1 && s.budget == 3072 && s.expert_bytes == 1536 && s.peak_resident_bytes <= 3072,
          "evictions %llu budget %llu expert bytes %llu peak %llu", (unsigned long long)s.evictions,
          (unsigned long long)s.budget, (unsigned long long)s.expert_bytes, (unsigned long long)s.peak_resident_bytes);
    CHECK(s.layers == 2 && s.experts_per_layer == 2, "geometry %lld x %lld", (long long)s.layers, (long long)s.experts_per_layer);
    CHECK_RC(wstore_residency_get_stats(r, 1, &s), WSTORE_OK);
    CHECK(s.demand_misses == 2, "layer 1 misses %llu", (unsigned long long)s.demand_misses);
    CHECK_RC(wstore_residency_get_stats(r, 2, &s), WSTORE_E_INVALID_ARGUMENT);

    /* A hit: acquire what is resident and pinned already. */
    wstore_expert *b2 = NULL;
    int hit = -1;
    CHECK_RC(wstore_expert_acquire(r, 0, 1, &b2), WSTORE_OK);
    CHECK_RC(wstore_expert_hit(b2, &hit), WSTORE_OK);
    CHECK(hit == 1, "acquire of a resident expert is a hit");
    CHECK_RC(wstore_expert_hit(c, &hit), WSTORE_OK);
    CHECK(hit == 0, "acquire that loaded is a miss");
    CHECK_RC(wstore_residency_get_stats(r, 0, &s), WSTORE_OK);
    CHECK(s.demand_hits == 1, "layer 0 hits %llu", (unsigned long long)s.demand_hits);
    wstore_expert_release(b2);

    /* Handles outlive the manager: bytes stay valid until released. */
    wstore_residency_close(r);
    CHECK(expert_holds(b, 0, 1) && expert_holds(c, 1, 0), "bytes valid after the manager is closed");
    CHECK_RC(wstore_expert_release(b), WSTORE_OK);
    CHECK_RC(wstore_expert_release(c), WSTORE_OK);
    CHECK_RC(wstore_expert_release(NULL), WSTORE_OK);
    CHECK_RC(wstore_residency_close(NULL), WSTORE_OK);
}

/* Misuse fails loudly: every stale, doubled or wrong-kind handle is WSTORE_E_INVALID_HANDLE. */
static void check_misuse(const char *path) {
    wstore_store *st = NULL;
    CHECK_RC(wstore_open(path, &st), WSTORE_OK);
    if (!st) return;
    wstore_residency *r = NULL;
    CHECK_RC(wstore_residency_open(st, NULL, 3072, NULL, 0, 0, &r), WSTORE_OK);
    if (!r) return;
    wstore_expert *e = NULL;
    CHECK_RC(wstore_expert_acquire(r, 0, 0, &e), WSTORE_OK);
    const wstore_expert_part *parts = NULL;
    size_t count = 0;
    CHECK_RC(wstore_expert_release(e), WSTORE_OK);
    CHECK_RC(wstore_expert_release(e), WSTORE_E_INVALID_HANDLE);            /* double release */
    CHECK(strstr(wstore_last_error(), "expert") != NULL, "double release: %s", wstore_last_error());
    CHECK_RC(wstore_expert_parts(e, &parts, &count), WSTORE_E_INVALID_HANDLE); /* use after release */
    int hit;
    CHECK_RC(wstore_expert_hit(e, &hit), WSTORE_E_INVALID_HANDLE);
    /* The slot is reused by the next acquire; the stale handle still does not match it. */
    wstore_expert *again = NULL;
    CHECK_RC(wstore_expert_acquire(r, 0, 0, &again), WSTORE_OK);
    CHECK(again != e, "a new handle differs from a released one");
    CHECK_RC(wstore_expert_release(e), WSTORE_E_INVALID_HANDLE);
    CHECK_RC(wstore_expert_parts(again, &parts, &count), WSTORE_OK);
    /* Wrong kinds. */
    wstore_tensor_info info;
    CHECK_RC(wstore_info((wstore_store *)r, "m", "embed", &info), WSTORE_E_INVALID_HANDLE);
    CHECK_RC(wstore_expert_release((wstore_expert *)st), WSTORE_E_INVALID_HANDLE);
    CHECK_RC(wstore_expert_acquire((wstore_residency *)again, 0, 0, &e), WSTORE_E_INVALID_HANDLE);
    CHECK_RC(wstore_residency_close((wstore_residency *)st), WSTORE_E_INVALID_HANDLE);
    /* Use after close, double close. */
    CHECK_RC(wstore_residency_close(r), WSTORE_OK);
    CHECK_RC(wstore_expert_acquire(r, 0, 0, &e), WSTORE_E_INVALID_HANDLE);
    int64_t one = 0;
    CHECK_RC(wstore_residency_prefetch(r, 0, &one, 1), WSTORE_E_INVALID_HANDLE);
    int32_t cand = 0;
    float prob = 1.0f;
    CHECK_RC(wstore_residency_observe(r, 0, &cand, &prob, 1), WSTORE_E_INVALID_HANDLE);
    wstore_residency_stats rs;
    CHECK_RC(wstore_residency_get_stats(r, -1, &rs), WSTORE_E_INVALID_HANDLE);
    CHECK_RC(wstore_residency_close(r), WSTORE_E_INVALID_HANDLE);
    CHECK_RC(wstore_expert_release(again), WSTORE_OK);                        /* outlives its manager */
    CHECK_RC(wstore_close(st), WSTORE_OK);
    CHECK_RC(wstore_info(st, "m", "embed", &info), WSTORE_E_INVALID_HANDLE);
    unsigned char buf[128];
    CHECK_RC(wstore_read(st, "m", "embed", buf, sizeof buf, 1), WSTORE_E_INVALID_HANDLE);
    CHECK_RC(wstore_residency_open(st, "m", 3072, NULL, 0, 0, &r), WSTORE_E_INVALID_HANDLE);
    CHECK_RC(wstore_close(st), WSTORE_E_INVALID_HANDLE);
    /* A pointer that was never a handle. */
    CHECK_RC(wstore_close((wstore_store *)(uintptr_t)0x1234), WSTORE_E_INVALID_HANDLE);
    CHECK_RC(wstore_format_version((wstore_store *)(uintptr_t)0x1234, &hit), WSTORE_E_INVALID_HANDLE);
}

/* Writing through a resident expert's pointer faults at once (the pages are read-only):
 * done in a child process, which must die of SIGSEGV. */
static void check_resident_bytes_are_read_only(wstore_store *st) {
    wstore_residency *r = NULL;
    wstore_expert *e = NULL;
    const void *data = NULL;
    size_t size = 0;
    CHECK_RC(wstore_residency_open(st, "m", 3072, NULL, 0, 0, &r), WSTORE_OK);
    CHECK_RC(wstore_expert_acquire(r, 1, 1, &e), WSTORE_OK);
    CHECK_RC(wstore_expert_part_by_name(e, "up", &data, &size), WSTORE_OK);
    if (!data) return;
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        ((volatile unsigned char *)data)[7] = 0x55; /* must fault: the child inherits the read-only pages */
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    /* Under a preloaded sanitizer runtime (make check-sanitizers) the runtime catches the
     * fault itself and exits non-zero instead of dying of SIGSEGV. */
    int sanitized = getenv("LD_PRELOAD") != NULL;
    CHECK((WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV)
              || (sanitized && WIFEXITED(status) && WEXITSTATUS(status) != 0),
          "write through a resident pointer: status 0x%x", status);
    CHECK(expert_holds(e, 1, 1), "bytes intact");
    wstore_expert_release(e);
    wstore_residency_close(r);
}

/* Four threads each pin a token's top-2 experts of one layer at once under a budget of
 * two experts (this store has two per layer): acquire_many never leaves two threads each
 * holding half of what the other needs. */
struct many_worker { wstore_residency *r; int bad; int errors; int hits; };

static void *acquire_many_loop(void *arg) {
    struct many_worker *w = arg;
    for (int i = 0; i < 200; i++) {
        int64_t layer = i & 1, set[2] = {i & 2 ? 1 : 0, i & 2 ? 0 : 1};
        wstore_expert *h[2] = {NULL, NULL};
        int hits[2] = {-1, -1};
        if (wstore_expert_acquire_many(w->r, layer, set, 2, h, hits) != WSTORE_OK) { w->errors++; continue; }
        if (!expert_holds(h[0], (int)layer, (int)set[0]) || !expert_holds(h[1], (int)layer, (int)set[1])) w->bad++;
        w->hits += hits[0] + hits[1];
        if (wstore_expert_release(h[1]) != WSTORE_OK || wstore_expert_release(h[0]) != WSTORE_OK) w->errors++;
    }
    return NULL;
}

static void check_acquire_many(wstore_store *st) {
    wstore_residency *r = NULL;
    CHECK_RC(wstore_residency_open(st, "m", 2 * 1536, "lru", 1, 60000, &r), WSTORE_OK);
    if (!r) return;
    wstore_expert *h[2];
    int64_t dup[2] = {1, 1}, three[3] = {0, 1, 0}, bad[2] = {0, 9};
    CHECK_RC(wstore_expert_acquire_many(r, 0, dup, 2, h, NULL), WSTORE_E_INVALID_ARGUMENT);
    CHECK_RC(wstore_expert_acquire_many(r, 0, bad, 2, h, NULL), WSTORE_E_NOT_FOUND);
    CHECK_RC(wstore_expert_acquire_many(r, 0, three, 2, NULL, NULL), WSTORE_E_INVALID_ARGUMENT);
    enum { N = 4 };
    pthread_t t[N];
    struct many_worker w[N];
    for (int i = 0; i < N; i++) {
        w[i] = (struct many_worker){r, 0, 0, 0};
        pthread_create(&t[i], NULL, acquire_many_loop, &w[i]);
    }
    int bad_bytes = 0, errors = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        bad_bytes += w[i].bad;
        errors += w[i].errors;
    }
    CHECK(bad_bytes == 0 && errors == 0, "acquire_many from 4 threads: %d wrong, %d failed", bad_bytes, errors);
    wstore_residency_stats s;
    CHECK_RC(wstore_residency_get_stats(r, -1, &s), WSTORE_OK);
    CHECK(s.demand_hits + s.demand_misses == N * 200 * 2 && s.peak_resident_bytes <= 2 * 1536, "counted %llu peak %llu",
          (unsigned long long)(s.demand_hits + s.demand_misses), (unsigned long long)s.peak_resident_bytes);
    wstore_residency_close(r);
}

/* Several threads acquire, check and release experts of one manager at once, with room
 * for fewer experts than there are, so loads, hits and evictions interleave. */
struct worker { wstore_residency *r; int seed; int bad; int errors; };

static void *acquire_loop(void *arg) {
    struct worker *w = arg;
    unsigned x = (unsigned)w->seed * 2654435761u + 1;
    for (int i = 0; i < 300; i++) {
        x = x * 1103515245u + 12345u;
        int l = (x >> 16) & 1, e = (x >> 17) & 1;
        wstore_expert *h = NULL;
        if (wstore_expert_acquire(w->r, l, e, &h) != WSTORE_OK) { w->errors++; continue; }
        if (!expert_holds(h, l, e)) w->bad++;
        if (i % 50 == 0) {
            int64_t next = 1 - e;
            wstore_residency_prefetch(w->r, l, &next, 1);
        }
        wstore_expert_release(h);
    }
    return NULL;
}

static void check_concurrent_acquires(wstore_store *st) {
    wstore_residency *r = NULL;
    CHECK_RC(wstore_residency_open(st, "m", 3 * 1536, "adaptive", 2, 10000, &r), WSTORE_OK);
    if (!r) return;
    enum { N = 4 };
    pthread_t t[N];
    struct worker w[N];
    for (int i = 0; i < N; i++) {
        w[i] = (struct worker){r, i, 0, 0};
        pthread_create(&t[i], NULL, acquire_loop, &w[i]);
    }
    int bad = 0, errors = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        bad += w[i].bad;
        errors += w[i].errors;
    }
    CHECK(bad == 0 && errors == 0, "concurrent acquires: %d with wrong bytes, %d failed", bad, errors);
    wstore_residency_stats s;
    CHECK_RC(wstore_residency_get_stats(r, -1, &s), WSTORE_OK);
    CHECK(s.demand_hits + s.demand_misses == N * 300, "acquires counted %llu",
          (unsigned long long)(s.demand_hits + s.demand_misses));
    CHECK(s.peak_resident_bytes <= 3 * 1536 && s.evictions > 0, "peak %llu evictions %llu",
          (unsigned long long)s.peak_resident_bytes, (unsigned long long)s.evictions);
    wstore_residency_close(r);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: abi_check STORE NOT_A_STORE_DIR\n");
        return 2;
    }
    CHECK(wstore_abi_version() == WSTORE_ABI_VERSION, "ABI version %d", wstore_abi_version());
    CHECK(strlen(wstore_version()) > 0, "version string");
    CHECK(strcmp(wstore_status_name(WSTORE_E_NOT_RAW), "WSTORE_E_NOT_RAW") == 0, "status name");
    check_errors_without_store(argv[2]);

    wstore_store *st = NULL;
    CHECK_RC(wstore_open(argv[1], &st), WSTORE_OK);
    if (st) {
        check_tensors(st);
        check_residency(st);
        check_concurrent_acquires(st);
        check_acquire_many(st);
        check_resident_bytes_are_read_only(st);
        wstore_close(st);
    }
    check_misuse(argv[1]);
    wstore_close(NULL);
    printf("abi_check: %d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
