/*
 * bench_abi: what the C ABI costs on the paths an engine calls per token, each beside a
 * baseline measured in the same run (ratios, not absolute times, are the result).
 *
 *   swift build -c release --product wstore-c
 *   cc -O2 -I include Benchmarks/CABI/bench_abi.c -L .build/release -lwstore-c \
 *      -Wl,-rpath,$PWD/.build/release -o bench_abi
 *   ./bench_abi STORE MODEL TENSOR        # TENSOR: a raw tensor, for the zero-copy path
 *
 * 1. wstore_expert_acquire + wstore_expert_release of resident experts (the hit path),
 *    beside an atomic increment + decrement of a per-expert counter (the least a pin costs).
 * 2. wstore_with_tensor of a raw tensor whose callback reads every 64th byte, beside a
 *    memcpy of the same bytes.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: bench_abi STORE MODEL TENSOR\n"); return 2; }
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
    return 0;
}
