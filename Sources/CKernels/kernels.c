// See include/wstore_kernels.h.
#include "wstore_kernels.h"
#include "kernels_internal.h"
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#define WSK_X86 1
#endif

// MARK: portable paths

static double exp_portable(float *x, size_t n, float shift) {
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        float e = expf(x[i] - shift);
        x[i] = e;
        sum += e;
    }
    return sum;
}

static float max_portable(const float *x, size_t n) {
    float m = x[0];
    for (size_t i = 1; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

float wsk_internal_half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) bits = sign;
        else {  // subnormal: normalize
            int e = -1;
            do { e++; man <<= 1; } while ((man & 0x400) == 0);
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 31) bits = sign | 0x7f800000u | (man << 13);
    else bits = sign | ((exp + 112) << 23) | (man << 13);
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t wsk_internal_float_to_half(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) return (uint16_t)(sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 : 0));
    if (absx >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);  // rounds to infinity
    if (absx < 0x38800000u) {  // subnormal half (or zero)
        if (absx < 0x33000000u) return (uint16_t)sign;
        uint32_t e = absx >> 23, man = (absx & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e;  // 14 + (113 - e) - 1
        uint32_t r = man >> shift, rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = absx + 0xc8000fffu + ((absx >> 13) & 1);  // rebias, round to nearest even
    return (uint16_t)(sign | (r >> 13));
}

// MARK: AVX2 / FMA / F16C paths

#ifdef WSK_X86
__attribute__((target("avx2,fma"))) static inline float hsum256(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
    return _mm_cvtss_f32(lo);
}

// A 6 x 16 block of outputs: 6 query rows against one panel of 16 keys, 12 accumulators,
// broadcasting one query element per row and step.
__attribute__((target("avx2,fma"))) static void panel_dots_avx2(const float *q, size_t m, const float *panels, size_t n,
                                                                size_t d, float scale, float *out, size_t ldo) {
    const __m256 sc = _mm256_set1_ps(scale);
    size_t panelCount = (n + 15) / 16;
    float tmp[6 * 16];
    for (size_t pnl = 0; pnl < panelCount; pnl++) {
        const float *P = panels + pnl * d * 16;
        size_t j0 = pnl * 16, width = n - j0 < 16 ? n - j0 : 16;
        size_t i = 0;
        for (; i < m; i += 6) {
            size_t rows = m - i < 6 ? m - i : 6;
            const float *q0 = q + i * d;
            const float *q1 = q0 + (rows > 1 ? d : 0), *q2 = q0 + (rows > 2 ? 2 * d : 0);
            const float *q3 = q0 + (rows > 3 ? 3 * d : 0), *q4 = q0 + (rows > 4 ? 4 * d : 0), *q5 = q0 + (rows > 5 ? 5 * d : 0);
            __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
            __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
            for (size_t t = 0; t < d; t++) {
                __m256 b0 = _mm256_loadu_ps(P + t * 16), b1 = _mm256_loadu_ps(P + t * 16 + 8);
                __m256 a = _mm256_broadcast_ss(q0 + t);
                c00 = _mm256_fmadd_ps(a, b0, c00); c01 = _mm256_fmadd_ps(a, b1, c01);
                a = _mm256_broadcast_ss(q1 + t);
                c10 = _mm256_fmadd_ps(a, b0, c10); c11 = _mm256_fmadd_ps(a, b1, c11);
                a = _mm256_broadcast_ss(q2 + t);
                c20 = _mm256_fmadd_ps(a, b0, c20); c21 = _mm256_fmadd_ps(a, b1, c21);
                a = _mm256_broadcast_ss(q3 + t);
                c30 = _mm256_fmadd_ps(a, b0, c30); c31 = _mm256_fmadd_ps(a, b1, c31);
                a = _mm256_broadcast_ss(q4 + t);
                c40 = _mm256_fmadd_ps(a, b0, c40); c41 = _mm256_fmadd_ps(a, b1, c41);
                a = _mm256_broadcast_ss(q5 + t);
                c50 = _mm256_fmadd_ps(a, b0, c50); c51 = _mm256_fmadd_ps(a, b1, c51);
            }
            __m256 c[12] = {c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51};
            if (width == 16) {
                for (size_t r = 0; r < rows; r++) {
                    _mm256_storeu_ps(out + (i + r) * ldo + j0, _mm256_mul_ps(c[2 * r], sc));
                    _mm256_storeu_ps(out + (i + r) * ldo + j0 + 8, _mm256_mul_ps(c[2 * r + 1], sc));
                }
            } else {
                for (size_t r = 0; r < rows; r++) {
                    _mm256_storeu_ps(tmp + r * 16, _mm256_mul_ps(c[2 * r], sc));
                    _mm256_storeu_ps(tmp + r * 16 + 8, _mm256_mul_ps(c[2 * r + 1], sc));
                    memcpy(out + (i + r) * ldo + j0, tmp + r * 16, width * sizeof(float));
                }
            }
        }
    }
}

// Packing: 8 x 8 transposes of two row blocks per panel and column block.
__attribute__((target("avx2,fma"))) static void pack_panels_avx2(const float *k, size_t n, size_t d, float *panels) {
    size_t panelCount = (n + 15) / 16;
    for (size_t p = 0; p < panelCount; p++) {
        float *P = panels + p * d * 16;
        size_t j0 = p * 16;
        if (j0 + 16 > n || d % 8 != 0) {  // a ragged panel: element by element
            for (size_t l = 0; l < 16; l++)
                for (size_t t = 0; t < d; t++) P[t * 16 + l] = j0 + l < n ? k[(j0 + l) * d + t] : 0.0f;
            continue;
        }
        for (size_t half = 0; half < 2; half++) {
            const float *rows = k + (j0 + 8 * half) * d;
            for (size_t t = 0; t < d; t += 8) {
                __m256 r0 = _mm256_loadu_ps(rows + 0 * d + t), r1 = _mm256_loadu_ps(rows + 1 * d + t);
                __m256 r2 = _mm256_loadu_ps(rows + 2 * d + t), r3 = _mm256_loadu_ps(rows + 3 * d + t);
                __m256 r4 = _mm256_loadu_ps(rows + 4 * d + t), r5 = _mm256_loadu_ps(rows + 5 * d + t);
                __m256 r6 = _mm256_loadu_ps(rows + 6 * d + t), r7 = _mm256_loadu_ps(rows + 7 * d + t);
                __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
                __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
                __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
                __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
                __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0)), u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
                __m256 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0)), u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
                __m256 u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0)), u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
                __m256 u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0)), u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
                float *o = P + t * 16 + 8 * half;
                _mm256_storeu_ps(o + 0 * 16, _mm256_permute2f128_ps(u0, u4, 0x20));
                _mm256_storeu_ps(o + 1 * 16, _mm256_permute2f128_ps(u1, u5, 0x20));
                _mm256_storeu_ps(o + 2 * 16, _mm256_permute2f128_ps(u2, u6, 0x20));
                _mm256_storeu_ps(o + 3 * 16, _mm256_permute2f128_ps(u3, u7, 0x20));
                _mm256_storeu_ps(o + 4 * 16, _mm256_permute2f128_ps(u0, u4, 0x31));
                _mm256_storeu_ps(o + 5 * 16, _mm256_permute2f128_ps(u1, u5, 0x31));
                _mm256_storeu_ps(o + 6 * 16, _mm256_permute2f128_ps(u2, u6, 0x31));
                _mm256_storeu_ps(o + 7 * 16, _mm256_permute2f128_ps(u3, u7, 0x31));
            }
        }
    }
}

// AVX-512: 6 query rows against two panels (32 keys), 12 accumulators of 16 lanes.
__attribute__((target("avx512f"))) static void panel_dots_avx512(const float *q, size_t m, const float *panels, size_t n,
                                                                size_t d, float scale, float *out, size_t ldo) {
    const __m512 sc = _mm512_set1_ps(scale);
    size_t panelCount = (n + 15) / 16;
    for (size_t pnl = 0; pnl < panelCount; pnl += 2) {
        const float *P0 = panels + pnl * d * 16;
        int two = pnl + 1 < panelCount;
        const float *P1 = two ? P0 + d * 16 : P0;
        size_t j0 = pnl * 16;
        size_t w0 = n - j0 < 16 ? n - j0 : 16, w1 = two ? (n - j0 - 16 < 16 ? n - j0 - 16 : 16) : 0;
        __mmask16 m0 = (__mmask16)((1u << w0) - 1), m1 = (__mmask16)((1u << w1) - 1);
        for (size_t i = 0; i < m; i += 6) {
            size_t rows = m - i < 6 ? m - i : 6;
            const float *q0 = q + i * d;
            const float *q1 = q0 + (rows > 1 ? d : 0), *q2 = q0 + (rows > 2 ? 2 * d : 0);
            const float *q3 = q0 + (rows > 3 ? 3 * d : 0), *q4 = q0 + (rows > 4 ? 4 * d : 0), *q5 = q0 + (rows > 5 ? 5 * d : 0);
            __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
            __m512 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
            for (size_t t = 0; t < d; t++) {
                __m512 b0 = _mm512_loadu_ps(P0 + t * 16), b1 = _mm512_loadu_ps(P1 + t * 16);
                __m512 a = _mm512_set1_ps(q0[t]);
                c00 = _mm512_fmadd_ps(a, b0, c00); c01 = _mm512_fmadd_ps(a, b1, c01);
                a = _mm512_set1_ps(q1[t]);
                c10 = _mm512_fmadd_ps(a, b0, c10); c11 = _mm512_fmadd_ps(a, b1, c11);
                a = _mm512_set1_ps(q2[t]);
                c20 = _mm512_fmadd_ps(a, b0, c20); c21 = _mm512_fmadd_ps(a, b1, c21);
                a = _mm512_set1_ps(q3[t]);
                c30 = _mm512_fmadd_ps(a, b0, c30); c31 = _mm512_fmadd_ps(a, b1, c31);
                a = _mm512_set1_ps(q4[t]);
                c40 = _mm512_fmadd_ps(a, b0, c40); c41 = _mm512_fmadd_ps(a, b1, c41);
                a = _mm512_set1_ps(q5[t]);
                c50 = _mm512_fmadd_ps(a, b0, c50); c51 = _mm512_fmadd_ps(a, b1, c51);
            }
            __m512 c[12] = {c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51};
            for (size_t r = 0; r < rows; r++) {
                _mm512_mask_storeu_ps(out + (i + r) * ldo + j0, m0, _mm512_mul_ps(c[2 * r], sc));
                if (w1) _mm512_mask_storeu_ps(out + (i + r) * ldo + j0 + 16, m1, _mm512_mul_ps(c[2 * r + 1], sc));
            }
        }
    }
}

// The CPU checks run at the first call and are cached; threads may race to fill the cache,
// all with the same value, so the cache is an atomic (relaxed: nothing else is published).
static int cpu_avx512(void) {
    static _Atomic int cached = -1;
    int c = atomic_load_explicit(&cached, memory_order_relaxed);
    if (c < 0) {
        __builtin_cpu_init();
        c = __builtin_cpu_supports("avx512f") ? 1 : 0;
        atomic_store_explicit(&cached, c, memory_order_relaxed);
    }
    return c;
}

// exp for 8 floats: range reduction by ln 2 and a degree-5 polynomial (Cephes expf), ~1 ulp.
__attribute__((target("avx2,fma"))) static inline __m256 exp256(__m256 x) {
    const __m256 hi = _mm256_set1_ps(88.3762626647949f), lo = _mm256_set1_ps(-87.3365447504f);
    __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
    __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
    __m256 y = _mm256_set1_ps(1.9875691500E-4f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507E-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073E-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894E-2f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459E-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201E-1f));
    __m256 x2 = _mm256_mul_ps(x, x);
    y = _mm256_fmadd_ps(y, x2, _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
    y = _mm256_mul_ps(y, _mm256_castsi256_ps(e));
    return _mm256_andnot_ps(under, y);  // below -87.34 the result would be subnormal (< 2^-126): 0
}

__attribute__((target("avx2,fma"))) static double exp_avx2(float *x, size_t n, float shift) {
    __m256 s = _mm256_set1_ps(shift), acc = _mm256_setzero_ps();
    double sum = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), s));
        _mm256_storeu_ps(x + i, e);
        acc = _mm256_add_ps(acc, e);
        if ((i & 1023) == 1016) { sum += hsum256(acc); acc = _mm256_setzero_ps(); }
    }
    sum += hsum256(acc);
    for (; i < n; i++) {
        float e = expf(x[i] - shift);
        x[i] = e;
        sum += e;
    }
    return sum;
}

__attribute__((target("avx2,fma"))) static float max_avx2(const float *x, size_t n) {
    size_t i = 0;
    float m = x[0];
    if (n >= 8) {
        __m256 a = _mm256_loadu_ps(x);
        for (i = 8; i + 8 <= n; i += 8) a = _mm256_max_ps(a, _mm256_loadu_ps(x + i));
        float t[8];
        _mm256_storeu_ps(t, a);
        m = t[0];
        for (int l = 1; l < 8; l++) m = t[l] > m ? t[l] : m;
    }
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

__attribute__((target("avx2,f16c"))) static void f16_to_f32_f16c(const uint16_t *src, float *dst, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++) dst[i] = wsk_internal_half_to_float(src[i]);
}

__attribute__((target("avx2,f16c"))) static void f32_to_f16_f16c(const float *src, uint16_t *dst, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) dst[i] = wsk_internal_float_to_half(src[i]);
}

int wsk_internal_cpu_ok(void) {
    static _Atomic int cached = -1;
    int c = atomic_load_explicit(&cached, memory_order_relaxed);
    if (c < 0) {
        __builtin_cpu_init();
        c = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
        atomic_store_explicit(&cached, c, memory_order_relaxed);
    }
    return c;
}
#else
int wsk_internal_cpu_ok(void) { return 0; }
#endif

// MARK: entry points

int wsk_has_avx2(void) { return wsk_internal_cpu_ok(); }

int wsk_has_avx512(void) {
#ifdef WSK_X86
    return cpu_avx512() && !getenv("WSTORE_NO_AVX512");
#else
    return 0;
#endif
}

void wsk_pack_panels(const float *k, size_t n, size_t d, float *panels) {
#ifdef WSK_X86
    if (wsk_internal_cpu_ok()) { pack_panels_avx2(k, n, d, panels); return; }
#endif
    size_t panelCount = (n + 15) / 16;
    for (size_t p = 0; p < panelCount; p++) {
        float *P = panels + p * d * 16;
        for (size_t l = 0; l < 16; l++) {
            size_t j = p * 16 + l;
            if (j < n) {
                const float *row = k + j * d;
                for (size_t t = 0; t < d; t++) P[t * 16 + l] = row[t];
            } else {
                for (size_t t = 0; t < d; t++) P[t * 16 + l] = 0;
            }
        }
    }
}

static void panel_dots_portable(const float *q, size_t m, const float *panels, size_t n, size_t d, float scale,
                                float *out, size_t ldo) {
    for (size_t i = 0; i < m; i++) {
        const float *qi = q + i * d;
        for (size_t j = 0; j < n; j++) {
            const float *P = panels + (j / 16) * d * 16 + (j % 16);
            float s = 0;
            for (size_t t = 0; t < d; t++) s += qi[t] * P[t * 16];
            out[i * ldo + j] = s * scale;
        }
    }
}

void wsk_panel_dots(const float *q, size_t m, const float *panels, size_t n, size_t d, float scale,
                    float *out, size_t ldo) {
#ifdef WSK_X86
    if (wsk_has_avx512()) { panel_dots_avx512(q, m, panels, n, d, scale, out, ldo); return; }
    if (wsk_internal_cpu_ok()) { panel_dots_avx2(q, m, panels, n, d, scale, out, ldo); return; }
#endif
    panel_dots_portable(q, m, panels, n, d, scale, out, ldo);
}

double wsk_exp_shift_sum(float *x, size_t n, float shift) {
#ifdef WSK_X86
    if (wsk_internal_cpu_ok()) return exp_avx2(x, n, shift);
#endif
    return exp_portable(x, n, shift);
}

float wsk_max(const float *x, size_t n) {
#ifdef WSK_X86
    if (wsk_internal_cpu_ok()) return max_avx2(x, n);
#endif
    return max_portable(x, n);
}

void wsk_f16_to_f32(const uint16_t *src, float *dst, size_t n) {
#ifdef WSK_X86
    if (wsk_internal_cpu_ok()) { f16_to_f32_f16c(src, dst, n); return; }
#endif
    for (size_t i = 0; i < n; i++) dst[i] = wsk_internal_half_to_float(src[i]);
}

void wsk_f32_to_f16(const float *src, uint16_t *dst, size_t n) {
#ifdef WSK_X86
    if (wsk_internal_cpu_ok()) { f32_to_f16_f16c(src, dst, n); return; }
#endif
    for (size_t i = 0; i < n; i++) dst[i] = wsk_internal_float_to_half(src[i]);
}

// MARK: quantization loops
// Each loop is compiled twice, for AVX2 and for the baseline, and picked at the call by the
// cached CPU check, as the kernels above are. Not target_clones: its ifunc resolvers run while
// the dynamic loader relocates, before a sanitizer runtime (TSan) has initialised, and crash it.

static inline __attribute__((always_inline)) void quantize_body(const float *x, size_t n, const float *m, const float *inv,
                                                                int per_element, float levels, uint8_t *out) {
    if (per_element) {
        for (size_t j = 0; j < n; j++) {
            float v = (x[j] - m[j]) * inv[j];
            v = v > 0 ? v : 0;
            v = v < levels ? v : levels;
            out[j] = (uint8_t)(int)nearbyintf(v);
        }
    } else {
        float m0 = m[0], i0 = inv[0];
        for (size_t j = 0; j < n; j++) {
            float v = (x[j] - m0) * i0;
            v = v > 0 ? v : 0;
            v = v < levels ? v : levels;
            out[j] = (uint8_t)(int)nearbyintf(v);
        }
    }
}

static inline __attribute__((always_inline)) void dequantize_body(const uint8_t *codes, size_t n, const float *m,
                                                                  const float *s, int per_element, float *out) {
    if (per_element) {
        for (size_t j = 0; j < n; j++) out[j] = m[j] + (float)codes[j] * s[j];
    } else {
        float m0 = m[0], s0 = s[0];
        for (size_t j = 0; j < n; j++) out[j] = m0 + (float)codes[j] * s0;
    }
}

static inline __attribute__((always_inline)) void minmax_update_body(const float *x, size_t n, float *lo, float *hi) {
    for (size_t j = 0; j < n; j++) {
        lo[j] = x[j] < lo[j] ? x[j] : lo[j];
        hi[j] = x[j] > hi[j] ? x[j] : hi[j];
    }
}

static inline __attribute__((always_inline)) void minmax_body(const float *x, size_t n, float *lo, float *hi) {
    float a = x[0], b = x[0];
    for (size_t j = 1; j < n; j++) {
        a = x[j] < a ? x[j] : a;
        b = x[j] > b ? x[j] : b;
    }
    *lo = a;
    *hi = b;
}

#ifdef WSK_X86
// "avx2" only, as the clones were: no FMA, so both paths round alike.
__attribute__((target("avx2"))) static void quantize_avx2(const float *x, size_t n, const float *m, const float *inv,
                                                          int per_element, float levels, uint8_t *out) {
    quantize_body(x, n, m, inv, per_element, levels, out);
}
__attribute__((target("avx2"))) static void dequantize_avx2(const uint8_t *codes, size_t n, const float *m, const float *s,
                                                            int per_element, float *out) {
    dequantize_body(codes, n, m, s, per_element, out);
}
__attribute__((target("avx2"))) static void minmax_update_avx2(const float *x, size_t n, float *lo, float *hi) {
    minmax_update_body(x, n, lo, hi);
}
__attribute__((target("avx2"))) static void minmax_avx2(const float *x, size_t n, float *lo, float *hi) {
    minmax_body(x, n, lo, hi);
}
#endif

void wsk_quantize(const float *x, size_t n, const float *m, const float *inv, int per_element, float levels,
                  uint8_t *out) {
#ifdef WSK_X86
    if (wsk_internal_cpu_ok()) { quantize_avx2(x, n, m, inv, per_element, levels, out); return; }
#endif
    quantize_body(x, n, m, inv, per_element, levels, out);
}

void wsk_dequantize(const uint8_t *codes, size_t n, const float *m, const float *s, int per_element, float *out) {
#ifdef WSK_X86
    if (wsk_internal_cpu_ok()) { dequantize_avx2(codes, n, m, s, per_element, out); return; }
#endif
    dequantize_body(codes, n, m, s, per_element, out);
}

void wsk_minmax_update(const float *x, size_t n, float *lo, float *hi) {
#ifdef WSK_X86
    if (wsk_internal_cpu_ok()) { minmax_update_avx2(x, n, lo, hi); return; }
#endif
    minmax_update_body(x, n, lo, hi);
}

void wsk_minmax(const float *x, size_t n, float *lo, float *hi) {
#ifdef WSK_X86
    if (wsk_internal_cpu_ok()) { minmax_avx2(x, n, lo, hi); return; }
#endif
    minmax_body(x, n, lo, hi);
}
