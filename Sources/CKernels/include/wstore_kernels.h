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

/// Quantization codes: out[j] = clamp(round_half_even((x[j] - m) * inv), 0, levels), where m and
/// inv are m[j] and inv[j] when per_element, m[0] and inv[0] otherwise.
void wsk_quantize(const float *x, size_t n, const float *m, const float *inv, int per_element, float levels,
                  uint8_t *out);

/// The inverse: out[j] = m + codes[j] * s, m and s per element or shared as above.
void wsk_dequantize(const uint8_t *codes, size_t n, const float *m, const float *s, int per_element, float *out);

/// lo[j] = min(lo[j], x[j]) and hi[j] = max(hi[j], x[j]) for j < n.
void wsk_minmax_update(const float *x, size_t n, float *lo, float *hi);

/// The smallest and largest of x[0..<n] (n > 0).
void wsk_minmax(const float *x, size_t n, float *lo, float *hi);

/// 1 when the AVX2/FMA paths are in use, 0 otherwise.
int wsk_has_avx2(void);

/// 1 when the AVX-512 score kernel is in use, 0 otherwise.
int wsk_has_avx512(void);

// MARK: GGML-layout quantized blocks (format-spec/FORMAT.md §8)

/// Element types the block kernels read and write.
enum { WSK_FLOAT_F32 = 0, WSK_FLOAT_F16 = 1, WSK_FLOAT_BF16 = 2 };

/// Block types, numbered by their ggml type ids. Q8_0: 34 bytes per 32 elements, an f16 scale d
/// then 32 int8 q, value = q * d. Q4_0: 18 bytes per 32 elements, an f16 scale d then 16 bytes,
/// byte j holding element j in its low nibble and element j + 16 in its high nibble,
/// value = (nibble - 8) * d.
enum { WSK_BLOCK_Q4_0 = 2, WSK_BLOCK_Q8_0 = 8 };

/// Bytes of one block of 32 elements of `block_type`; 0 for an unknown type.
size_t wsk_block_bytes(int block_type);

/// Quantizes n elements (n a multiple of 32) of `src` (little-endian, of `src_type`) into n / 32
/// blocks at `dst`, bit for bit as ggml's quantize_row_q8_0_ref / quantize_row_q4_0_ref do
/// (the input widened to float exactly first). Returns -1 for an unknown type or n not a multiple
/// of 32 (nothing written), else the number of blocks whose f16 scale is not finite (an infinite
/// or NaN input, or a block whose scale overflows f16): such blocks dequantize to inf or NaN.
long wsk_quantize_blocks(int block_type, const void *src, int src_type, size_t n, uint8_t *dst);

/// The scalar reference of wsk_quantize_blocks: ggml's code as written, one element at a time.
long wsk_quantize_blocks_ref(int block_type, const void *src, int src_type, size_t n, uint8_t *dst);

/// Dequantizes n elements (n a multiple of 32) of blocks at `src` into `dst` as `dst_type`
/// (float products q * d, then rounded to nearest even for f16 and bf16). Returns -1 for an
/// unknown type or n not a multiple of 32 (nothing written), else 0.
int wsk_dequantize_blocks(int block_type, const uint8_t *src, size_t n, void *dst, int dst_type);

/// The scalar reference of wsk_dequantize_blocks.
int wsk_dequantize_blocks_ref(int block_type, const uint8_t *src, size_t n, void *dst, int dst_type);

#endif
