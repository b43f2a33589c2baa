// See include/wstore_kernels.h.
#include "wstore_kernels.h"
#include <math.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#define WSK_X86 1
#endif

// MARK: portable paths

static void dots_portable(const float *q, size_t m, const float *k, size_t n, size_t d, float scale,
                          float *out, size_t ldo) {
    for (size_t i = 0; i < m; i++) {
        const float *qi = q + i * d;
        for (size_t j = 0; j < n; j++) {
            const float *kj = k + j * d;
            float acc[8] = {0};
            size_t t = 0;
            for (; t + 8 <= d; t += 8)
                for (int l = 0; l < 8; l++) acc[l] += qi[t + l] * kj[t + l];
            float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
            for (; t < d; t++) s += qi[t] * kj[t];
            out[i * ldo + j] = s * scale;
        }
    }
}

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

static float half_to_float(uint16_t h) {
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

static uint16_t float_to_half(float f) {
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

// A 3 x 4 tile of dot products, 8 lanes along the head dimension, summed across lanes at the end.
__attribute__((target("avx2,fma"))) static void dots_avx2(const float *q, size_t m, const float *k, size_t n,
                                                          size_t d, float scale, float *out, size_t ldo) {
    size_t j = 0;
    for (; j + 4 <= n; j += 4) {
        const float *k0 = k + j * d, *k1 = k0 + d, *k2 = k1 + d, *k3 = k2 + d;
        size_t i = 0;
        for (; i + 3 <= m; i += 3) {
            const float *q0 = q + i * d, *q1 = q0 + d, *q2 = q1 + d;
            __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a03 = a00;
            __m256 a10 = a00, a11 = a00, a12 = a00, a13 = a00;
            __m256 a20 = a00, a21 = a00, a22 = a00, a23 = a00;
            for (size_t t = 0; t < d; t += 8) {
                __m256 b0 = _mm256_loadu_ps(k0 + t), b1 = _mm256_loadu_ps(k1 + t);
                __m256 b2 = _mm256_loadu_ps(k2 + t), b3 = _mm256_loadu_ps(k3 + t);
                __m256 x = _mm256_loadu_ps(q0 + t);
                a00 = _mm256_fmadd_ps(x, b0, a00); a01 = _mm256_fmadd_ps(x, b1, a01);
                a02 = _mm256_fmadd_ps(x, b2, a02); a03 = _mm256_fmadd_ps(x, b3, a03);
                x = _mm256_loadu_ps(q1 + t);
                a10 = _mm256_fmadd_ps(x, b0, a10); a11 = _mm256_fmadd_ps(x, b1, a11);
                a12 = _mm256_fmadd_ps(x, b2, a12); a13 = _mm256_fmadd_ps(x, b3, a13);
                x = _mm256_loadu_ps(q2 + t);
                a20 = _mm256_fmadd_ps(x, b0, a20); a21 = _mm256_fmadd_ps(x, b1, a21);
                a22 = _mm256_fmadd_ps(x, b2, a22); a23 = _mm256_fmadd_ps(x, b3, a23);
            }
            float *o0 = out + i * ldo + j, *o1 = o0 + ldo, *o2 = o1 + ldo;
            o0[0] = hsum256(a00) * scale; o0[1] = hsum256(a01) * scale; o0[2] = hsum256(a02) * scale; o0[3] = hsum256(a03) * scale;
            o1[0] = hsum256(a10) * scale; o1[1] = hsum256(a11) * scale; o1[2] = hsum256(a12) * scale; o1[3] = hsum256(a13) * scale;
            o2[0] = hsum256(a20) * scale; o2[1] = hsum256(a21) * scale; o2[2] = hsum256(a22) * scale; o2[3] = hsum256(a23) * scale;
        }
        for (; i < m; i++) {
            const float *q0 = q + i * d;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (size_t t = 0; t < d; t += 8) {
                __m256 x = _mm256_loadu_ps(q0 + t);
                a0 = _mm256_fmadd_ps(x, _mm256_loadu_ps(k0 + t), a0);
                a1 = _mm256_fmadd_ps(x, _mm256_loadu_ps(k1 + t), a1);
                a2 = _mm256_fmadd_ps(x, _mm256_loadu_ps(k2 + t), a2);
                a3 = _mm256_fmadd_ps(x, _mm256_loadu_ps(k3 + t), a3);
            }
            float *o = out + i * ldo + j;
            o[0] = hsum256(a0) * scale; o[1] = hsum256(a1) * scale; o[2] = hsum256(a2) * scale; o[3] = hsum256(a3) * scale;
        }
    }
    for (; j < n; j++) {
        const float *k0 = k + j * d;
        for (size_t i = 0; i < m; i++) {
            const float *q0 = q + i * d;
            __m256 a = _mm256_setzero_ps();
            for (size_t t = 0; t < d; t += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(q0 + t), _mm256_loadu_ps(k0 + t), a);
            out[i * ldo + j] = hsum256(a) * scale;
        }
    }
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
    return _mm256_andnot_ps(under, y);  // below the range: 0, as expf underflows there
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
    for (; i < n; i++) dst[i] = half_to_float(src[i]);
}

__attribute__((target("avx2,f16c"))) static void f32_to_f16_f16c(const float *src, uint16_t *dst, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) dst[i] = float_to_half(src[i]);
}

static int cpu_ok(void) {
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    }
    return cached;
}
#else
static int cpu_ok(void) { return 0; }
#endif

// MARK: entry points

int wsk_has_avx2(void) { return cpu_ok(); }

void wsk_scaled_dots(const float *q, size_t m, const float *k, size_t n, size_t d, float scale,
                     float *out, size_t ldo) {
#ifdef WSK_X86
    if (cpu_ok() && d % 8 == 0) { dots_avx2(q, m, k, n, d, scale, out, ldo); return; }
#endif
    dots_portable(q, m, k, n, d, scale, out, ldo);
}

double wsk_exp_shift_sum(float *x, size_t n, float shift) {
#ifdef WSK_X86
    if (cpu_ok()) return exp_avx2(x, n, shift);
#endif
    return exp_portable(x, n, shift);
}

float wsk_max(const float *x, size_t n) {
#ifdef WSK_X86
    if (cpu_ok()) return max_avx2(x, n);
#endif
    return max_portable(x, n);
}

void wsk_f16_to_f32(const uint16_t *src, float *dst, size_t n) {
#ifdef WSK_X86
    if (cpu_ok()) { f16_to_f32_f16c(src, dst, n); return; }
#endif
    for (size_t i = 0; i < n; i++) dst[i] = half_to_float(src[i]);
}

void wsk_f32_to_f16(const float *src, uint16_t *dst, size_t n) {
#ifdef WSK_X86
    if (cpu_ok()) { f32_to_f16_f16c(src, dst, n); return; }
#endif
    for (size_t i = 0; i < n; i++) dst[i] = float_to_half(src[i]);
}
