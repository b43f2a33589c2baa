// Numeric kernels for wstore (the KV cache's attention scores and float conversions).
// Each function picks an AVX-512 or AVX2/FMA/F16C path at run time when the CPU has it
// (WSTORE_NO_AVX512=1 in the environment keeps AVX-512 off), and a portable path otherwise; both give the same results up to float rounding.
#ifndef WSTORE_KERNELS_H
#define WSTORE_KERNELS_H
#include <stddef.h>
#include <stdint.h>

/// Packs n rows of d floats (k, row-major) into ceil(n/16) panels of [d][16] floats,
/// the last panel padded with zeros: the layout wsk_panel_dots reads.
void wsk_pack_panels(const float *k, size_t n, size_t d, float *panels);

/// out[i * ldo + j] = scale * dot(q[i * d ..], key j) for i < m, j < n, the keys packed
/// by wsk_pack_panels. Writes only columns j < n.
void wsk_panel_dots(const float *q, size_t m, const float *panels, size_t n, size_t d, float scale,
                    float *out, size_t ldo);

/// x[i] = exp(x[i] - shift) for i < n (about 1 ulp; results below 2^-126 may be 0);
/// returns the sum of the new x (as a double).
double wsk_exp_shift_sum(float *x, size_t n, float shift);

/// The largest of x[0..<n] (n > 0).
float wsk_max(const float *x, size_t n);

/// IEEE half to float, n elements.
void wsk_f16_to_f32(const uint16_t *src, float *dst, size_t n);

/// float to IEEE half (round to nearest even), n elements.
void wsk_f32_to_f16(const float *src, uint16_t *dst, size_t n);

/// 1 when the AVX2/FMA paths are in use, 0 otherwise.
int wsk_has_avx2(void);

/// 1 when the AVX-512 score kernel is in use, 0 otherwise.
int wsk_has_avx512(void);

#endif
