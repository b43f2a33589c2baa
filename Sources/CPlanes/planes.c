#include "wstore_planes.h"

#include <string.h>

// One body, compiled twice: for the baseline target (SSE2 on x86-64) and for AVX2.
#define SPLIT2_BODY                                                                  \
    if (rotate) {                                                                    \
        for (size_t i = 0; i < n; i++) {                                             \
            uint16_t v = (uint16_t)(src[2 * i] | (uint16_t)src[2 * i + 1] << 8);     \
            v = (uint16_t)(v << 1 | v >> 15);                                        \
            hi[i] = (uint8_t)(v >> 8);                                               \
            lo[i] = (uint8_t)v;                                                      \
        }                                                                            \
    } else {                                                                         \
        for (size_t i = 0; i < n; i++) {                                             \
            lo[i] = src[2 * i];                                                      \
            hi[i] = src[2 * i + 1];                                                  \
        }                                                                            \
    }

#define MERGE2_BODY                                                                  \
    if (rotate) {                                                                    \
        for (size_t i = 0; i < n; i++) {                                             \
            uint16_t v = (uint16_t)((uint16_t)hi[i] << 8 | lo[i]);                   \
            v = (uint16_t)(v >> 1 | v << 15);                                        \
            out[2 * i] = (uint8_t)v;                                                 \
            out[2 * i + 1] = (uint8_t)(v >> 8);                                      \
        }                                                                            \
    } else {                                                                         \
        for (size_t i = 0; i < n; i++) {                                             \
            out[2 * i] = lo[i];                                                      \
            out[2 * i + 1] = hi[i];                                                  \
        }                                                                            \
    }

static void split2_base(const uint8_t *restrict src, size_t n, int rotate, uint8_t *restrict hi,
                        uint8_t *restrict lo) {
    SPLIT2_BODY
}

static void merge2_base(const uint8_t *restrict hi, const uint8_t *restrict lo, size_t n, int rotate,
                        uint8_t *restrict out) {
    MERGE2_BODY
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) static void split2_avx2(const uint8_t *restrict src, size_t n, int rotate,
                                                        uint8_t *restrict hi, uint8_t *restrict lo) {
    SPLIT2_BODY
}

__attribute__((target("avx2"))) static void merge2_avx2(const uint8_t *restrict hi, const uint8_t *restrict lo,
                                                        size_t n, int rotate, uint8_t *restrict out) {
    MERGE2_BODY
}

static int has_avx2(void) {
    static int known = -1;
    if (known < 0) known = __builtin_cpu_supports("avx2") ? 1 : 0;
    return known;
}
#endif

void wsp_split2(const uint8_t *src, size_t n, int rotate, uint8_t *hi, uint8_t *lo) {
#if defined(__x86_64__)
    if (has_avx2()) {
        split2_avx2(src, n, rotate, hi, lo);
        return;
    }
#endif
    split2_base(src, n, rotate, hi, lo);
}

void wsp_merge2(const uint8_t *hi, const uint8_t *lo, size_t n, int rotate, uint8_t *out) {
#if defined(__x86_64__)
    if (has_avx2()) {
        merge2_avx2(hi, lo, n, rotate, out);
        return;
    }
#endif
    merge2_base(hi, lo, n, rotate, out);
}
