// Helpers kernels.c shares with the other kernel files of this target; not part of the API.
#ifndef WSTORE_KERNELS_INTERNAL_H
#define WSTORE_KERNELS_INTERNAL_H
#include <stdint.h>

#define WSK_INTERNAL __attribute__((visibility("hidden")))

/// IEEE half to float (exact).
WSK_INTERNAL float wsk_internal_half_to_float(uint16_t h);
/// float to IEEE half, round to nearest even (overflow gives infinity).
WSK_INTERNAL uint16_t wsk_internal_float_to_half(float f);
/// 1 when the CPU has AVX2, FMA and F16C (cached after the first call).
WSK_INTERNAL int wsk_internal_cpu_ok(void);

#endif
