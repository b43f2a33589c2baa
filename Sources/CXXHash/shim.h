#include <xxhash.h>
#if defined(__x86_64__) || defined(__i386__)
/* libxxhash's run-time dispatch (SSE2/AVX2/AVX-512) entry points; same results as
   XXH3_64bits, several times faster on wide vector units. Keep the plain names plain. */
#define XXH_DISPATCH_DISABLE_REPLACE 1
#include <xxh_x86dispatch.h>
#endif
