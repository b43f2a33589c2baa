/*
 * kv_check: the KV cache through include/wstore.h the way an engine uses it. Run by
 * CABITests:
 *
 *   kv_check DIR [KV_FILE]
 *
 * KV_FILE (written by Clients/real_kv.py from a real model's forward pass) holds int32
 * layers, tokens, heads, head_dim, then per layer K and V as f16 in the engine layout
 * [tokens][heads][head_dim]; without it the KV is generated. DIR is an empty directory
 * for the stores. Prints one line per failed check and exits 1 if any.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wstore.h"

static pthread_mutex_t check_lock = PTHREAD_MUTEX_INITIALIZER;
#define CHECK_LOCK() pthread_mutex_lock(&check_lock)
#define CHECK_UNLOCK() pthread_mutex_unlock(&check_lock)
#include "check.h"

/* The prompt's KV, engine layout: kv[layer][0 = K, 1 = V] of tokens x heads x dim f16. */
static int L, T, H, D;
static uint16_t **kv;
static uint32_t *ids;

static float half_to_float(uint16_t h) {
    uint32_t s = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 31, m = h & 1023, f;
    if (e == 0) {
        float v = ldexpf((float)m, -24);
        return s ? -v : v;
    }
    if (e == 31) f = s | 0x7F800000u | (m << 13);
    else f = s | ((e + 112) << 23) | (m << 13);
    float out;
    memcpy(&out, &f, 4);
    return out;
}

static uint16_t float_to_half(float x) { /* round to nearest even, finite inputs of modest size */
    uint32_t f;
    memcpy(&f, &x, 4);
    uint32_t s = (f >> 16) & 0x8000;
    int e = (int)((f >> 23) & 255) - 127 + 15;
    uint32_t m = f & 0x7FFFFF;
    if (e <= 0) return (uint16_t)s;
    uint32_t h = s | ((uint32_t)e << 10) | (m >> 13);
    uint32_t rest = m & 0x1FFF;
    if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h++;
    return (uint16_t)h;
}

static void load_or_generate(const char *file) {
    if (file) {
        FILE *f = fopen(file, "rb");
        int32_t hdr[4];
        if (!f || fread(hdr, 4, 4, f) != 4) { printf("FAIL cannot read %s\n", file); exit(1); }
        L = hdr[0]; T = hdr[1]; H = hdr[2]; D = hdr[3];
        kv = calloc((size_t)(2 * L), sizeof *kv);
        for (int i = 0; i < 2 * L; i++) {
            kv[i] = malloc((size_t)T * H * D * 2);
            if (fread(kv[i], 2, (size_t)T * H * D, f) != (size_t)T * H * D) { printf("FAIL short %s\n", file); exit(1); }
        }
        fclose(f);
    } else {
        L = 4; T = 256; H = 4; D = 32;
        kv = calloc((size_t)(2 * L), sizeof *kv);
        uint64_t x = 88172645463325252ull;
        for (int i = 0; i < 2 * L; i++) {
            kv[i] = malloc((size_t)T * H * D * 2);
            for (size_t j = 0; j < (size_t)T * H * D; j++) {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                float u = (float)(x >> 40) / (float)(1 << 24) - 0.5f;
                kv[i][j] = float_to_half(u * 4.0f + (float)(j % D) * 0.05f);
            }
        }
    }
    ids = malloc((size_t)(2 * T) * sizeof *ids);
    for (int t = 0; t < 2 * T; t++) ids[t] = (uint32_t)(1000 + t * 7);
}

/* Layer descriptions over buffers of `cap` tokens in the engine layout. */
static void describe(wstore_kv_layer *layers, uint16_t **bufs, int cap) {
    (void)cap;
    for (int l = 0; l < L; l++) {
        layers[l] = (wstore_kv_layer){bufs[2 * l], bufs[2 * l + 1], WSTORE_DTYPE_F16, H, D, 0,
                                      (int64_t)H * D * 2, 0};
    }
}

static uint16_t **alloc_buffers(int cap, uint16_t fill) {
    uint16_t **b = calloc((size_t)(2 * L), sizeof *b);
    for (int i = 0; i < 2 * L; i++) {
        b[i] = malloc((size_t)cap * H * D * 2);
        for (size_t j = 0; j < (size_t)cap * H * D; j++) b[i][j] = fill;
    }
    return b;
}

static void free_buffers(uint16_t **b) {
    for (int i = 0; i < 2 * L; i++) free(b[i]);
    free(b);
}

/* The source KV extended to 2T tokens: token t >= T repeats token t - T (a longer prompt). */
static uint16_t source(int i, int t, int h, int d) { return kv[i][((size_t)(t % T) * H + h) * D + d]; }

/* Delivered tokens equal the source bit for bit; the rest of the buffer is untouched. */
static int exact(uint16_t **got, int tokens, int cap, uint16_t fill) {
    for (int i = 0; i < 2 * L; i++)
        for (int t = 0; t < cap; t++)
            for (int h = 0; h < H; h++)
                for (int d = 0; d < D; d++) {
                    uint16_t g = got[i][((size_t)t * H + h) * D + d];
                    if (t < tokens ? g != source(i, t, h, d) : g != fill) return 0;
                }
    return 1;
}

/* ---- readers beside a writer */

struct reader { wstore_kv *kv; int cap; int bad; int errors; int64_t least; int64_t most; };

static void *reader_loop(void *arg) {
    struct reader *r = arg;
    uint16_t **bufs = alloc_buffers(r->cap, 0x7E00);
    wstore_kv_layer *layers = calloc((size_t)L, sizeof *layers);
    describe(layers, bufs, r->cap);
    r->least = 1 << 30;
    for (int i = 0; i < 40; i++) {
        for (int j = 0; j < 2 * L; j++)
            for (size_t k = 0; k < (size_t)r->cap * H * D; k++) bufs[j][k] = 0x7E00;
        wstore_kv_lookup_result res;
        if (wstore_kv_lookup(r->kv, "m", NULL, ids, (size_t)r->cap, layers, (size_t)L, &res) != WSTORE_OK) { r->errors++; continue; }
        if (res.damaged || !exact(bufs, (int)res.tokens, r->cap, 0x7E00)) r->bad++;
        if ((int64_t)res.tokens < r->least) r->least = (int64_t)res.tokens;
        if ((int64_t)res.tokens > r->most) r->most = (int64_t)res.tokens;
    }
    free(layers);
    free_buffers(bufs);
    return NULL;
}

struct writer { wstore_kv *kv; int chunk; int errors; };

static void *writer_loop(void *arg) {
    struct writer *w = arg;
    /* The writer's own copy of the longer prompt's KV, stored chunk by chunk. */
    uint16_t **bufs = alloc_buffers(2 * T, 0);
    for (int i = 0; i < 2 * L; i++)
        for (int t = 0; t < 2 * T; t++)
            for (int h = 0; h < H; h++)
                for (int d = 0; d < D; d++) bufs[i][((size_t)t * H + h) * D + d] = source(i, t, h, d);
    wstore_kv_layer *layers = calloc((size_t)L, sizeof *layers);
    describe(layers, bufs, 2 * T);
    for (int n = T + w->chunk; n <= 2 * T; n += w->chunk) {
        size_t cached = 0;
        if (wstore_kv_store(w->kv, "m", NULL, ids, (size_t)n, layers, (size_t)L, &cached) != WSTORE_OK || cached != (size_t)n) w->errors++;
    }
    free(layers);
    free_buffers(bufs);
    return NULL;
}

static void check_lossless(const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/lossless", dir);
    wstore_kv_options o = {0};
    o.chunk_tokens = 32;
    wstore_kv *k = NULL;
    CHECK_RC(wstore_kv_create(path, &o, &k), WSTORE_OK);
    if (!k) return;
    CHECK_RC(wstore_kv_create(path, &o, &k), WSTORE_E_INVALID_ARGUMENT); /* holds a store already */

    uint16_t **bufs = alloc_buffers(T, 0);
    for (int i = 0; i < 2 * L; i++) memcpy(bufs[i], kv[i], (size_t)T * H * D * 2);
    wstore_kv_layer *layers = calloc((size_t)L, sizeof *layers);
    describe(layers, bufs, T);
    size_t cached = 0;
    CHECK_RC(wstore_kv_store(k, "m", NULL, ids, (size_t)T - 5, layers, (size_t)L, &cached), WSTORE_OK);
    CHECK(cached == (size_t)(T - 5) / 32 * 32, "cached %zu after storing %d tokens", cached, T - 5);
    CHECK_RC(wstore_kv_store(k, "m", NULL, ids, (size_t)T, layers, (size_t)L, &cached), WSTORE_OK);
    CHECK(cached == (size_t)T, "cached %zu", cached);
    CHECK_RC(wstore_kv_probe(k, "m", NULL, ids, (size_t)T, &cached), WSTORE_OK);
    CHECK(cached == (size_t)T, "probe %zu", cached);
    CHECK_RC(wstore_kv_probe(k, "other", NULL, ids, (size_t)T, &cached), WSTORE_OK);
    CHECK(cached == 0, "another model probes %zu", cached);
    CHECK_RC(wstore_kv_probe(k, "m", "lora", ids, (size_t)T, &cached), WSTORE_OK);
    CHECK(cached == 0, "another salt probes %zu", cached);

    /* Lookup straight into fresh buffers: bit-exact. */
    uint16_t **got = alloc_buffers(T, 0x7E00);
    wstore_kv_layer *into = calloc((size_t)L, sizeof *into);
    describe(into, got, T);
    wstore_kv_lookup_result res;
    CHECK_RC(wstore_kv_lookup(k, "m", NULL, ids, (size_t)T, into, (size_t)L, &res), WSTORE_OK);
    CHECK(res.tokens == (uint64_t)T && res.chunks == (uint64_t)T / 32 && res.damaged == 0, "lookup %llu tokens",
          (unsigned long long)res.tokens);
    CHECK(exact(got, T, T, 0x7E00), "lossless lookup is bit-exact");

    /* Buffers of another shape are refused. */
    into[0].kv_heads = H + 1;
    CHECK_RC(wstore_kv_lookup(k, "m", NULL, ids, (size_t)T, into, (size_t)L, &res), WSTORE_E_INVALID_ARGUMENT);
    into[0].kv_heads = H;
    CHECK_RC(wstore_kv_lookup(k, "m", NULL, ids, (size_t)T, into, (size_t)L - 1, &res), L > 1 ? WSTORE_E_INVALID_ARGUMENT : WSTORE_OK);
    into[0].dtype = WSTORE_DTYPE_I32;
    CHECK_RC(wstore_kv_lookup(k, "m", NULL, ids, (size_t)T, into, (size_t)L, &res), WSTORE_E_INVALID_ARGUMENT);
    into[0].dtype = WSTORE_DTYPE_F16;

    /* Four readers look up the longer prompt while a writer extends the cached prefix. */
    enum { N = 4 };
    pthread_t t[N + 1];
    struct reader r[N];
    struct writer w = {k, 32, 0};
    for (int i = 0; i < N; i++) {
        r[i] = (struct reader){k, 2 * T, 0, 0, 0, 0};
        pthread_create(&t[i], NULL, reader_loop, &r[i]);
    }
    pthread_create(&t[N], NULL, writer_loop, &w);
    for (int i = 0; i <= N; i++) pthread_join(t[i], NULL);
    int bad = 0, errors = w.errors;
    for (int i = 0; i < N; i++) {
        bad += r[i].bad;
        errors += r[i].errors;
        CHECK(r[i].least >= T, "reader %d saw only %lld tokens", i, (long long)r[i].least);
    }
    CHECK(bad == 0 && errors == 0, "readers beside a writer: %d wrong, %d failed", bad, errors);
    CHECK_RC(wstore_kv_probe(k, "m", NULL, ids, (size_t)(2 * T), &cached), WSTORE_OK);
    CHECK(cached == (size_t)(2 * T), "after the writer: %zu", cached);

    wstore_kv_stats s;
    CHECK_RC(wstore_kv_get_stats(k, &s), WSTORE_OK);
    CHECK(s.chunks == (uint64_t)(2 * T / 32) && s.chunk_tokens == 32 && s.codec == WSTORE_KV_LOSSLESS && s.read_only == 0,
          "stats: %llu chunks", (unsigned long long)s.chunks);
    CHECK(s.lookups >= 1 + N * 40 && s.hit_tokens >= (uint64_t)T * (1 + N * 40) && s.raw_bytes == (uint64_t)(2 * T) * L * H * D * 4,
          "lookups %llu hit tokens %llu raw %llu", (unsigned long long)s.lookups, (unsigned long long)s.hit_tokens,
          (unsigned long long)s.raw_bytes);

    /* A read-only handle of the same store answers lookups and refuses stores. */
    wstore_kv *ro = NULL;
    CHECK_RC(wstore_kv_open(path, 1, 2, &ro), WSTORE_OK);
    CHECK_RC(wstore_kv_lookup(ro, "m", NULL, ids, (size_t)T, into, (size_t)L, &res), WSTORE_OK);
    CHECK(res.tokens == (uint64_t)T && exact(got, T, T, 0x7E00), "read-only lookup");
    CHECK_RC(wstore_kv_store(ro, "m", NULL, ids, (size_t)T, layers, (size_t)L, &cached), WSTORE_E_INVALID_ARGUMENT);
    CHECK_RC(wstore_kv_close(ro), WSTORE_OK);

    /* Misuse fails loudly. */
    CHECK_RC(wstore_kv_close(k), WSTORE_OK);
    CHECK_RC(wstore_kv_close(k), WSTORE_E_INVALID_HANDLE);
    CHECK_RC(wstore_kv_probe(k, "m", NULL, ids, (size_t)T, &cached), WSTORE_E_INVALID_HANDLE);
    CHECK_RC(wstore_kv_lookup(k, "m", NULL, ids, (size_t)T, into, (size_t)L, &res), WSTORE_E_INVALID_HANDLE);
    CHECK_RC(wstore_kv_get_stats(k, &s), WSTORE_E_INVALID_HANDLE);
    CHECK_RC(wstore_kv_close(NULL), WSTORE_OK);
    o.codec = 3;
    snprintf(path, sizeof path, "%s/bad-codec", dir);
    CHECK_RC(wstore_kv_create(path, &o, &k), WSTORE_E_INVALID_ARGUMENT);
    CHECK_RC(wstore_kv_open("/nonexistent/kv", 0, 1, &k), WSTORE_E_NOT_A_STORE);
    free(layers);
    free(into);
    free_buffers(bufs);
    free_buffers(got);
}

/* int4 (KIVI: keys per channel over runs of `group` tokens of a chunk, values per token over
 * runs of `group` channels): each element within half a quantization step of its group,
 * plus f16 rounding of the element, the group minimum and the scale. */
static void check_int4(const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/int4", dir);
    const int chunk = 64, group = 32;
    wstore_kv_options o = {0};
    o.chunk_tokens = chunk;
    o.codec = WSTORE_KV_INT4;
    o.kivi_group = group;
    wstore_kv *k = NULL;
    CHECK_RC(wstore_kv_create(path, &o, &k), WSTORE_OK);
    if (!k) return;
    uint16_t **bufs = alloc_buffers(T, 0);
    for (int i = 0; i < 2 * L; i++) memcpy(bufs[i], kv[i], (size_t)T * H * D * 2);
    wstore_kv_layer *layers = calloc((size_t)L, sizeof *layers);
    describe(layers, bufs, T);
    size_t cached = 0;
    CHECK_RC(wstore_kv_store(k, "m", NULL, ids, (size_t)T, layers, (size_t)L, &cached), WSTORE_OK);
    uint16_t **got = alloc_buffers(T, 0);
    describe(layers, got, T);
    wstore_kv_lookup_result res;
    CHECK_RC(wstore_kv_lookup(k, "m", NULL, ids, (size_t)T, layers, (size_t)L, &res), WSTORE_OK);
    CHECK(res.tokens == (uint64_t)T / chunk * chunk, "int4 lookup %llu", (unsigned long long)res.tokens);
    int over = 0, exact_count = 0;
    double worst = 0;
    for (int i = 0; i < 2 * L; i++) {
        int keys = i % 2 == 0;
        for (int t = 0; t < (int)res.tokens; t++)
            for (int h = 0; h < H; h++)
                for (int d = 0; d < D; d++) {
                    /* The group of (t, h, d). */
                    float lo = INFINITY, hi = -INFINITY;
                    if (keys) {
                        int c0 = t / chunk * chunk, g0 = c0 + (t - c0) / group * group, g1 = g0 + group;
                        if (g1 > c0 + chunk) g1 = c0 + chunk;
                        for (int u = g0; u < g1; u++) {
                            float x = half_to_float(source(i, u, h, d));
                            lo = x < lo ? x : lo; hi = x > hi ? x : hi;
                        }
                    } else {
                        int g0 = d / group * group, g1 = g0 + group > D ? D : g0 + group;
                        for (int e = g0; e < g1; e++) {
                            float x = half_to_float(source(i, t, h, e));
                            lo = x < lo ? x : lo; hi = x > hi ? x : hi;
                        }
                    }
                    float x = half_to_float(source(i, t, h, d));
                    float y = half_to_float(got[i][((size_t)t * H + h) * D + d]);
                    double step = (hi - lo) / 15.0;
                    double bound = 0.5 * step * 1.01 + ldexp(fabs(x) + fabs(lo) + fabs(hi - lo), -10) + 1e-7;
                    double err = fabs((double)x - y);
                    if (err > bound) over++;
                    if (err == 0) exact_count++;
                    if (err > worst) worst = err;
                }
    }
    CHECK(over == 0, "%d int4 elements outside half a step (worst error %g)", over, worst);
    CHECK(exact_count < (int)res.tokens * H * D * 2 * L, "int4 is lossy: every element exact means nothing was quantized");
    CHECK_RC(wstore_kv_close(k), WSTORE_OK);
    free(layers);
    free_buffers(bufs);
    free_buffers(got);
}

int main(int argc, char **argv) {
    if (argc != 2 && argc != 3) {
        fprintf(stderr, "usage: kv_check DIR [KV_FILE]\n");
        return 2;
    }
    load_or_generate(argc == 3 ? argv[2] : NULL);
    printf("kv_check: %s KV, %d layers, %d tokens, %d heads x %d\n", argc == 3 ? "real" : "generated", L, T, H, D);
    check_lossless(argv[1]);
    check_int4(argv[1]);
    printf("kv_check: %d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
