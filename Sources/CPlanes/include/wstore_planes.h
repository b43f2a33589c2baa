// Byte-plane split and merge of 2-byte elements for wstore records (format-spec/FORMAT.md §4.3),
// in C so the compiler vectorizes them; an AVX2 path is picked at run time when the CPU has it.
#ifndef WSTORE_PLANES_H
#define WSTORE_PLANES_H
#include <stddef.h>
#include <stdint.h>

/// For i < n, with x the little-endian 2-byte element at src + 2i (rotated left by one bit
/// when `rotate`): hi[i] = x >> 8, lo[i] = x & 0xFF. The buffers must not overlap.
void wsp_split2(const uint8_t *src, size_t n, int rotate, uint8_t *hi, uint8_t *lo);

/// The inverse of wsp_split2: out + 2i receives hi[i] << 8 | lo[i] (rotated right by one
/// bit when `rotate`), little-endian. The buffers must not overlap.
void wsp_merge2(const uint8_t *hi, const uint8_t *lo, size_t n, int rotate, uint8_t *out);

#endif
