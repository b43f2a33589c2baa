// GGML-layout Q8_0 / Q4_0 blocks: quantize from f32/f16/bf16, dequantize to f32/f16/bf16.
// See include/wstore_kernels.h and format-spec/FORMAT.md §8.
//
// Three paths give the same bytes: the reference (ggml's quantize_row_*_ref as written, with
// roundf and first-maximum search), a portable path written so a compiler can vectorize each
// 32-element block (integer maxima over |x| bit patterns, round-half-away as
// trunc(v + copysign(0.49999997, v)), the expansion LLVM itself uses for roundf), and the same
// portable code compiled for AVX2 + F16C, chosen at run time. No FMA: x * id and the additions
// round as two operations on every path.
#include "wstore_kernels.h"
#include "kernels_internal.h"
#include <math.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#define WSK_X86 1
#endif

#define QK 32

size_t wsk_block_bytes(int block_type) {
    switch (block_type) {
    case WSK_BLOCK_Q8_0: return 2 + QK;
    case WSK_BLOCK_Q4_0: return 2 + QK / 2;
    default: return 0;
    }
}

static int valid(int block_type, int float_type, size_t n) {
    return wsk_block_bytes(block_type) != 0 && float_type >= WSK_FLOAT_F32 && float_type <= WSK_FLOAT_BF16 &&
           n % QK == 0;
}

static inline __attribute__((always_inline)) float bits_float(uint32_t b) {
    float f;
    memcpy(&f, &b, 4);
    return f;
}

static inline __attribute__((always_inline)) uint32_t float_bits(float f) {
    uint32_t b;
    memcpy(&b, &f, 4);
    return b;
}

static inline __attribute__((always_inline)) uint16_t load_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static inline __attribute__((always_inline)) void store_u16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

/// bf16 from float, round to nearest even; a NaN stays a (quiet) NaN.
static inline __attribute__((always_inline)) uint16_t float_to_bf16(float f) {
    uint32_t b = float_bits(f);
    if ((b & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((b >> 16) | 0x40);
    return (uint16_t)((b + 0x7fffu + ((b >> 16) & 1)) >> 16);
}

/// Is an f16 bit pattern infinite or NaN?
static inline __attribute__((always_inline)) int half_not_finite(uint16_t h) { return (h & 0x7c00) == 0x7c00; }

// MARK: one block, vectorizable

/// A block holding an infinity or a NaN (which ggml leaves undefined): a NaN scale and the codes
/// of zero, on every path. Returns 1, the block's count as "not finite".
static int not_finite_block(int block_type, uint8_t *out) {
    store_u16(out, 0x7e00);
    if (block_type == WSK_BLOCK_Q8_0) memset(out + 2, 0, QK);
    else memset(out + 2, 0x88, QK / 2);
    return 1;
}

static inline __attribute__((always_inline)) uint32_t abs_max_bits(const float *x) {
    uint32_t m = 0;
    for (int j = 0; j < QK; j++) {
        uint32_t b = float_bits(x[j]) & 0x7fffffffu;
        m = b > m ? b : m;
    }
    return m;
}

static inline __attribute__((always_inline)) int q8_block(const float *x, uint8_t *out) {
    // ggml: d = amax / ((1 << 7) - 1); id = d ? 1/d : 0; q = roundf(x * id).
    uint32_t mb = abs_max_bits(x);
    if (mb >= 0x7f800000u) return not_finite_block(WSK_BLOCK_Q8_0, out);
    float amax = bits_float(mb);
    float d = amax / 127.0f;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    uint16_t dh = wsk_internal_float_to_half(d);
    store_u16(out, dh);
    int8_t q[QK];
    for (int j = 0; j < QK; j++) {
        float v = x[j] * id;
        q[j] = (int8_t)(int)truncf(v + copysignf(0.49999997f, v));
    }
    memcpy(out + 2, q, QK);
    return half_not_finite(dh);
}

static inline __attribute__((always_inline)) int q4_block(const float *x, uint8_t *out) {
    // ggml: max = the first element of the largest |x| (0 when all are zero); d = max / -8;
    // id = d ? 1/d : 0; nibble = MIN(15, (int8_t)(x * id + 8.5f)).
    uint32_t mb = abs_max_bits(x);
    if (mb >= 0x7f800000u) return not_finite_block(WSK_BLOCK_Q4_0, out);
    float max = 0.0f;
    if (mb != 0)
        for (int j = 0; j < QK; j++)
            if ((float_bits(x[j]) & 0x7fffffffu) == mb) {
                max = x[j];
                break;
            }
    float d = max / -8.0f;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    uint16_t dh = wsk_internal_float_to_half(d);
    store_u16(out, dh);
    uint8_t qs[QK / 2];
    for (int j = 0; j < QK / 2; j++) {
        int a = (int)(x[j] * id + 8.5f), b = (int)(x[j + QK / 2] * id + 8.5f);
        a = a < 15 ? a : 15;
        b = b < 15 ? b : 15;
        qs[j] = (uint8_t)(a | (b << 4));
    }
    memcpy(out + 2, qs, QK / 2);
    return half_not_finite(dh);
}

static inline __attribute__((always_inline)) void dq8_block(const uint8_t *in, float *y) {
    float d = wsk_internal_half_to_float(load_u16(in));
    const int8_t *q = (const int8_t *)(in + 2);
    for (int j = 0; j < QK; j++) y[j] = (float)q[j] * d;
}

static inline __attribute__((always_inline)) void dq4_block(const uint8_t *in, float *y) {
    float d = wsk_internal_half_to_float(load_u16(in));
    const uint8_t *qs = in + 2;
    for (int j = 0; j < QK / 2; j++) {
        y[j] = (float)((qs[j] & 0x0f) - 8) * d;
        y[j + QK / 2] = (float)((qs[j] >> 4) - 8) * d;
    }
}

static inline __attribute__((always_inline)) void widen_bf16(const uint16_t *s, float *x) {
    for (int j = 0; j < QK; j++) x[j] = bits_float((uint32_t)s[j] << 16);
}

static inline __attribute__((always_inline)) void narrow_bf16(const float *x, uint16_t *s) {
    for (int j = 0; j < QK; j++) s[j] = float_to_bf16(x[j]);
}

// The block loops, stamped out once per path. WIDEN_F16 / NARROW_F16 convert 32 halves.
#define WSK_BLOCK_LOOPS(SUFFIX, ATTR, WIDEN_F16, NARROW_F16)                                                     \
    ATTR static long quantize_##SUFFIX(int block_type, const void *src, int src_type, size_t n, uint8_t *dst) { \
        size_t bb = wsk_block_bytes(block_type);                                                                 \
        long bad = 0;                                                                                            \
        float tmp[QK];                                                                                           \
        for (size_t b = 0; b < n / QK; b++) {                                                                    \
            const float *x = tmp;                                                                                \
            switch (src_type) {                                                                                  \
            case WSK_FLOAT_F32: x = (const float *)src + b * QK; break;                                          \
            case WSK_FLOAT_F16: WIDEN_F16((const uint16_t *)src + b * QK, tmp); break;                          \
            default: widen_bf16((const uint16_t *)src + b * QK, tmp); break;                                     \
            }                                                                                                    \
            bad += block_type == WSK_BLOCK_Q8_0 ? q8_block(x, dst + b * bb) : q4_block(x, dst + b * bb);        \
        }                                                                                                        \
        return bad;                                                                                              \
    }                                                                                                            \
    ATTR static void dequantize_##SUFFIX(int block_type, const uint8_t *src, size_t n, void *dst, int dst_type) { \
        size_t bb = wsk_block_bytes(block_type);                                                                 \
        float tmp[QK];                                                                                           \
        for (size_t b = 0; b < n / QK; b++) {                                                                    \
            float *y = dst_type == WSK_FLOAT_F32 ? (float *)dst + b * QK : tmp;                                  \
            if (block_type == WSK_BLOCK_Q8_0) dq8_block(src + b * bb, y);                                        \
            else dq4_block(src + b * bb, y);                                                                     \
            if (dst_type == WSK_FLOAT_F16) NARROW_F16(tmp, (uint16_t *)dst + b * QK);                           \
            else if (dst_type == WSK_FLOAT_BF16) narrow_bf16(tmp, (uint16_t *)dst + b * QK);                    \
        }                                                                                                        \
    }

static inline __attribute__((always_inline)) void widen_f16_portable(const uint16_t *s, float *x) {
    for (int j = 0; j < QK; j++) x[j] = wsk_internal_half_to_float(s[j]);
}
static inline __attribute__((always_inline)) void narrow_f16_portable(const float *x, uint16_t *s) {
    for (int j = 0; j < QK; j++) s[j] = wsk_internal_float_to_half(x[j]);
}

WSK_BLOCK_LOOPS(portable, , widen_f16_portable, narrow_f16_portable)

#ifdef WSK_X86
__attribute__((target("avx2,f16c"))) static inline void widen_f16_f16c(const uint16_t *s, float *x) {
    for (int j = 0; j < QK; j += 8) _mm256_storeu_ps(x + j, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + j))));
}
__attribute__((target("avx2,f16c"))) static inline void narrow_f16_f16c(const float *x, uint16_t *s) {
    for (int j = 0; j < QK; j += 8)
        _mm_storeu_si128((__m128i *)(s + j), _mm256_cvtps_ph(_mm256_loadu_ps(x + j), _MM_FROUND_TO_NEAREST_INT));
}
WSK_BLOCK_LOOPS(avx2, __attribute__((target("avx2,f16c"))), widen_f16_f16c, narrow_f16_f16c)
#endif

long wsk_quantize_blocks(int block_type, const void *src, int src_type, size_t n, uint8_t *dst) {
    if (!valid(block_type, src_type, n)) return -1;
#ifdef WSK_X86
    if (wsk_internal_cpu_ok()) return quantize_avx2(block_type, src, src_type, n, dst);
#endif
    return quantize_portable(block_type, src, src_type, n, dst);
}

int wsk_dequantize_blocks(int block_type, const uint8_t *src, size_t n, void *dst, int dst_type) {
    if (!valid(block_type, dst_type, n)) return -1;
#ifdef WSK_X86
    if (wsk_internal_cpu_ok()) {
        dequantize_avx2(block_type, src, n, dst, dst_type);
        return 0;
    }
#endif
    dequantize_portable(block_type, src, n, dst, dst_type);
    return 0;
}

// MARK: reference (ggml-quants.c, quantize_row_q8_0_ref / quantize_row_q4_0_ref, as written)

static float ref_load(const void *src, int type, size_t i) {
    switch (type) {
    case WSK_FLOAT_F32: return ((const float *)src)[i];
    case WSK_FLOAT_F16: return wsk_internal_half_to_float(((const uint16_t *)src)[i]);
    default: return bits_float((uint32_t)((const uint16_t *)src)[i] << 16);
    }
}

long wsk_quantize_blocks_ref(int block_type, const void *src, int src_type, size_t n, uint8_t *dst) {
    if (!valid(block_type, src_type, n)) return -1;
    size_t bb = wsk_block_bytes(block_type);
    long bad = 0;
    for (size_t i = 0; i < n / QK; i++) {
        uint8_t *y = dst + i * bb;
        float amax = 0.0f, max = 0.0f;
        int finite = 1;
        for (size_t j = 0; j < QK; j++) {
            const float v = ref_load(src, src_type, i * QK + j);
            finite &= isfinite(v) != 0;
            if (amax < fabsf(v)) {
                amax = fabsf(v);
                max = v;
            }
        }
        if (!finite) {
            bad += not_finite_block(block_type, y);
            continue;
        }
        const float d = block_type == WSK_BLOCK_Q8_0 ? amax / ((1 << 7) - 1) : max / -8;
        const float id = d ? 1.0f / d : 0.0f;
        const uint16_t dh = wsk_internal_float_to_half(d);
        store_u16(y, dh);
        bad += half_not_finite(dh);
        for (size_t j = 0; j < (block_type == WSK_BLOCK_Q8_0 ? QK : QK / 2); j++) {
            if (block_type == WSK_BLOCK_Q8_0) {
                const float x0 = ref_load(src, src_type, i * QK + j) * id;
                y[2 + j] = (uint8_t)(int8_t)roundf(x0);
            } else {
                const float x0 = ref_load(src, src_type, i * QK + j) * id;
                const float x1 = ref_load(src, src_type, i * QK + QK / 2 + j) * id;
                int xi0 = (int)(x0 + 8.5f), xi1 = (int)(x1 + 8.5f);
                xi0 = xi0 < 15 ? xi0 : 15;
                xi1 = xi1 < 15 ? xi1 : 15;
                y[2 + j] = (uint8_t)(xi0 | (xi1 << 4));
            }
        }
    }
    return bad;
}

int wsk_dequantize_blocks_ref(int block_type, const uint8_t *src, size_t n, void *dst, int dst_type) {
    if (!valid(block_type, dst_type, n)) return -1;
    size_t bb = wsk_block_bytes(block_type);
    for (size_t i = 0; i < n; i++) {
        const uint8_t *blk = src + (i / QK) * bb;
        const float d = wsk_internal_half_to_float(load_u16(blk));
        size_t j = i % QK;
        int q = block_type == WSK_BLOCK_Q8_0 ? (int)(int8_t)blk[2 + j]
                                             : (j < QK / 2 ? (blk[2 + j] & 0x0f) : (blk[2 + j - QK / 2] >> 4)) - 8;
        float v = (float)q * d;
        switch (dst_type) {
        case WSK_FLOAT_F32: ((float *)dst)[i] = v; break;
        case WSK_FLOAT_F16: ((uint16_t *)dst)[i] = wsk_internal_float_to_half(v); break;
        default: ((uint16_t *)dst)[i] = float_to_bf16(v); break;
        }
    }
    return 0;
}
