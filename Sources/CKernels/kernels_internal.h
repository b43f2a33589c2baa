// Helpers kernels.c shares with the other kernel files of this target; not part of the API.
#ifndef WSTORE_KERNELS_INTERNAL_H
#define WSTORE_KERNELS_INTERNAL_H
#include <stdint.h>

/// IEEE half to float (exact).
float wsk_internal_half_to_float(uint16_t h);
/// float to IEEE half, round to nearest even (overflow gives infinity).
uint16_t wsk_internal_float_to_half(float f);
/// 1 when the CPU has AVX2, FMA and F16C (cached after the first call).
int wsk_internal_cpu_ok(void);

#endif
