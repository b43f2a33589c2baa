/*
 * bench_abi: what the C ABI costs on the paths an engine calls per token, each beside a
 * baseline measured in the same run (ratios, not absolute times, are the result).
 *
 *   swift build -c release --product wstore-c
 *   cc -O2 -I include Benchmarks/CABI/bench_abi.c -L .build/release -lwstore-c \
 *      -Wl,-rpath,$PWD/.build/release -o bench_abi
 *   ./bench_abi STORE MODEL TENSOR KV_DIR   # TENSOR: a raw tensor; KV_DIR: an empty directory
 *
 * 1. wstore_expert_acquire + wstore_expert_release of resident experts (the hit path),
 *    beside an atomic increment + decrement of a per-expert counter (the least a pin costs).
 * 2. wstore_expert_acquire_many of two resident experts + two releases, beside two
 *    acquire + release pairs.
 * 3. wstore_with_tensor of a raw tensor whose callback reads every 64th byte, beside a
 *    memcpy of the same bytes.
 * 4. The KV cache, per codec (raw, lossless, int4), 4 layers x 8 heads x 128 bf16 x 1024
 *    tokens in the engine layout [tokens][heads][dim]: wstore_kv_store of the whole prefix
 *    into a fresh store, wstore_kv_probe, wstore_kv_lookup into the engine's buffers,
 *    beside a memcpy of the same raw bytes.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "wstore.h"

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int touch(const void *data, size_t size, const wstore_tensor_info *info, void *ctx) {
    (void)info;
    const unsigned char *b = data;
    unsigned s = 0;
    for (size_t i = 0; i < size; i += 64) s += b[i];
    *(unsigned *)ctx += s;
    return 0;
}

#define DIE(what) do { fprintf(stderr, "%s: %s\n", what, wstore_last_error()); return 1; } while (0)

/* 4. The KV cache through the ABI, per codec, beside a memcpy of the same raw bytes. */
static int bench_kv(const char *dir) {
    enum { KL = 4, KH = 8, KD = 128, KT = 1024 };
    const size_t per_layer = (size_t)KT * KH * KD * 2, raw = 2 * KL * per_layer;
    unsigned char *src = malloc(2 * KL * per_layer), *dst = malloc(2 * KL * per_layer), *copy = malloc(raw);
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < raw / 2; i++) {           /* bf16 of roughly normal values */
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        float f = ((float)(x >> 40) / (float)(1 << 24) - 0.5f) * 3.0f;
        uint32_t b;
        memcpy(&b, &f, 4);
        uint16_t h = (uint16_t)(b >> 16);
        memcpy(src + 2 * i, &h, 2);
    }
    uint32_t *ids = malloc(KT * sizeof *ids);
    for (int t = 0; t < KT; t++) ids[t] = (uint32_t)(7 + t * 31);
    wstore_kv_layer in[KL], out[KL];
    for (int l = 0; l < KL; l++) {
        in[l] = (wstore_kv_layer){src + 2 * l * per_layer, src + (2 * l + 1) * per_layer, WSTORE_DTYPE_BF16, KH, KD, 0, KH * KD * 2, 0};
        out[l] = in[l];
        out[l].k = dst + 2 * l * per_layer;
        out[l].v = dst + (2 * l + 1) * per_layer;
    }
    const int codecs[3] = {WSTORE_KV_RAW, WSTORE_KV_LOSSLESS, WSTORE_KV_INT4};
    const char *names[3] = {"raw", "lossless", "int4"};
    const int rounds = 5, lookups = 8;
    for (int c = 0; c < 3; c++) {
        double best_store = 1e30, best_probe = 1e30, best_lookup = 1e30, best_copy = 1e30;
        for (int round = 0; round < rounds; round++) {
            char path[4096];
            snprintf(path, sizeof path, "%s/kv-%s-%d", dir, names[c], round);
            wstore_kv_options o = {0};
            o.chunk_tokens = 256;
            o.codec = codecs[c];
            wstore_kv *kv;
            if (wstore_kv_create(path, &o, &kv)) DIE("kv_create");
            size_t cached = 0;
            double t0 = now_ns();
            if (wstore_kv_store(kv, "bench", NULL, ids, KT, in, KL, &cached) || cached != KT) DIE("kv_store");
            double t1 = now_ns();
            for (int i = 0; i < 1000; i++)
                if (wstore_kv_probe(kv, "bench", NULL, ids, KT, &cached) || cached != KT) DIE("kv_probe");
            double t2 = now_ns();
            for (int i = 0; i < lookups; i++) {
                wstore_kv_lookup_result res;
                if (wstore_kv_lookup(kv, "bench", NULL, ids, KT, out, KL, &res) || res.tokens != KT) DIE("kv_lookup");
            }
            double t3 = now_ns();
            for (int i = 0; i < lookups; i++) {
                memcpy(copy, src, raw);
                src[(size_t)i * 4099 % raw] ^= 0;  /* keep the copies */
            }
            double t4 = now_ns();
            if (codecs[c] != WSTORE_KV_INT4 && memcmp(src, dst, raw) != 0) { fprintf(stderr, "kv_lookup: wrong bytes\n"); return 1; }
            if (t1 - t0 < best_store) best_store = t1 - t0;
            if ((t2 - t1) / 1000 < best_probe) best_probe = (t2 - t1) / 1000;
            if ((t3 - t2) / lookups < best_lookup) best_lookup = (t3 - t2) / lookups;
            if ((t4 - t3) / lookups < best_copy) best_copy = (t4 - t3) / lookups;
            wstore_kv_close(kv);
        }
        printf("kv %-8s %zu MiB: store %.2f GB/s, probe %.1f us, lookup %.2f GB/s; memcpy %.2f GB/s: lookup %.2fx memcpy\n",
               names[c], raw >> 20, raw / best_store, best_probe / 1e3, raw / best_lookup, raw / best_copy,
               best_copy / best_lookup);
    }
    free(src); free(dst); free(copy); free(ids);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 5) { fprintf(stderr, "usage: bench_abi STORE MODEL TENSOR KV_DIR\n"); return 2; }
    wstore_store *st;
    if (wstore_open(argv[1], &st)) DIE("open");
    wstore_residency *r;
    if (wstore_residency_open(st, argv[2], 1LL << 40, NULL, 0, -1, &r)) DIE("residency");
    wstore_residency_stats s;
    wstore_residency_get_stats(r, -1, &s);
    int64_t L = s.layers, E = s.experts_per_layer;
    for (int64_t l = 0; l < L; l++)
        for (int64_t e = 0; e < E; e++) {
            wstore_expert *h;
            if (wstore_expert_acquire(r, l, e, &h)) DIE("acquire");
            wstore_expert_release(h);
        }
    const int rounds = 5, n = 2000000;
    _Atomic long *pins = calloc((size_t)(L * E), sizeof *pins);
    double best_hit = 1e30, best_atomic = 1e30;
    for (int round = 0; round < rounds; round++) {
        double t0 = now_ns();
        for (int i = 0; i < n; i++) {
            wstore_expert *h;
            if (wstore_expert_acquire(r, i % L, (i / L) % E, &h)) DIE("acquire");
            wstore_expert_release(h);
        }
        double t1 = now_ns();
        for (int i = 0; i < n; i++) {
            _Atomic long *p = &pins[(i % L) * E + (i / L) % E];
            atomic_fetch_add_explicit(p, 1, memory_order_acquire);
            atomic_fetch_sub_explicit(p, 1, memory_order_release);
        }
        double t2 = now_ns();
        if ((t1 - t0) / n < best_hit) best_hit = (t1 - t0) / n;
        if ((t2 - t1) / n < best_atomic) best_atomic = (t2 - t1) / n;
    }
    printf("expert acquire+release (hit): %.1f ns, atomic pin+unpin baseline %.1f ns: %.1fx\n",
           best_hit, best_atomic, best_hit / best_atomic);

    if (E >= 2) {
        double best_many = 1e30, best_pairs = 1e30;
        const int m2 = n / 4;
        for (int round = 0; round < rounds; round++) {
            double t0 = now_ns();
            for (int i = 0; i < m2; i++) {
                int64_t set[2] = {(i / L) % E, ((i / L) + 1) % E};
                wstore_expert *h[2];
                if (wstore_expert_acquire_many(r, i % L, set, 2, h, NULL)) DIE("acquire_many");
                wstore_expert_release(h[0]);
                wstore_expert_release(h[1]);
            }
            double t1 = now_ns();
            for (int i = 0; i < m2; i++) {
                wstore_expert *h[2];
                if (wstore_expert_acquire(r, i % L, (i / L) % E, &h[0])) DIE("acquire");
                if (wstore_expert_acquire(r, i % L, ((i / L) + 1) % E, &h[1])) DIE("acquire");
                wstore_expert_release(h[0]);
                wstore_expert_release(h[1]);
            }
            double t2 = now_ns();
            if ((t1 - t0) / m2 < best_many) best_many = (t1 - t0) / m2;
            if ((t2 - t1) / m2 < best_pairs) best_pairs = (t2 - t1) / m2;
        }
        printf("expert acquire_many(2)+2 releases (hits): %.1f ns, two acquire+release pairs %.1f ns: %.2fx\n",
               best_many, best_pairs, best_many / best_pairs);
    }

    wstore_tensor_info info;
    if (wstore_info(st, argv[2], argv[3], &info)) DIE("info");
    size_t size = (size_t)info.raw_size;
    unsigned char *src = malloc(size), *dst = malloc(size);
    memset(src, 1, size);
    unsigned sink = 0;
    const int m = 200000;
    double best_zc = 1e30, best_copy = 1e30;
    for (int round = 0; round < rounds; round++) {
        double t0 = now_ns();
        for (int i = 0; i < m; i++)
            if (wstore_with_tensor(st, argv[2], argv[3], 0, touch, &sink)) DIE("with_tensor");
        double t1 = now_ns();
        for (int i = 0; i < m; i++) {
            memcpy(dst, src, size);
            src[i % size] = (unsigned char)i;
            sink += dst[(i * 64) % size];
        }
        double t2 = now_ns();
        if ((t1 - t0) / m < best_zc) best_zc = (t1 - t0) / m;
        if ((t2 - t1) / m < best_copy) best_copy = (t2 - t1) / m;
    }
    printf("with_tensor of %zu bytes: %.1f ns, memcpy baseline %.1f ns: %.2fx (sink %u)\n",
           size, best_zc, best_copy, best_zc / best_copy, sink & 1);
    wstore_residency_close(r);
    wstore_close(st);
    return bench_kv(argv[4]);
}
