/*
 * Expert precision through the C ABI, on a store written by the test: model "m", one
 * layer of 2 experts, parts down, gate, up of f32 [4, 64], each with Q8_0 and Q4_0
 * variants. The blocks are decoded here from wstore_part_blocks alone (an engine's own
 * kernel) and must agree with wstore_expert_dequantize and with the exact values.
 * Usage: precision_check STORE. Prints "precision_check: N checks, F failed".
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wstore.h"

static int checks, failures;

#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        checks++;                                                              \
        if (!(cond)) {                                                         \
            failures++;                                                        \
            printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);             \
            printf(__VA_ARGS__);                                               \
            printf(" (last error: %s)\n", wstore_last_error());                \
        }                                                                      \
    } while (0)

#define CHECK_RC(call, want)                                                   \
    do {                                                                       \
        int rc_ = (call);                                                      \
        CHECK(rc_ == (want), "%s returned %s, want %s", #call,                 \
              wstore_status_name(rc_), wstore_status_name(want));              \
    } while (0)

static float half_to_float(uint16_t h) {
    int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    float v = e == 0 ? ldexpf((float)m, -24) : ldexpf((float)(m | 0x400), e - 25);
    return (h & 0x8000) ? -v : v;
}

/* Decodes block-layout values from the fields of `b` only. */
static void decode(const unsigned char *data, const wstore_part_blocks *b, float *out) {
    for (int64_t k = 0; k < b->blocks; k++) {
        const unsigned char *blk = data + k * b->block_bytes;
        uint16_t hs;
        memcpy(&hs, blk + b->scale_offset, 2);
        float d = half_to_float(hs);
        const unsigned char *q = blk + b->quant_offset;
        for (int i = 0; i < b->block_elements; i++) {
            int v;
            if (b->quant_bits == 8) {
                v = b->quant_signed ? (int)(int8_t)q[i] : (int)q[i];
            } else {
                int half = b->block_elements / 2;
                v = i < half ? (q[i] & 0x0f) : (q[i - half] >> 4);
            }
            out[k * b->block_elements + i] = (float)(v - b->zero_point) * d;
        }
    }
}

static const void *part_data(const wstore_expert *h, const char *name, size_t *size) {
    const void *data = NULL;
    if (wstore_expert_part_by_name(h, name, &data, size) != WSTORE_OK) return NULL;
    return data;
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: precision_check STORE\n"); return 2; }
    wstore_store *st = NULL;
    CHECK_RC(wstore_open(argv[1], &st), WSTORE_OK);
    if (!st) return 1;
    wstore_residency *r = NULL;
    CHECK_RC(wstore_residency_open(st, "m", 1 << 20, "lru", 1, 0, &r), WSTORE_OK);
    wstore_expert *h = NULL;

    /* Misuse: error codes, never a crash. */
    CHECK_RC(wstore_expert_acquire_precision(r, 0, 0, 7, 0, &h), WSTORE_E_INVALID_ARGUMENT);
    CHECK_RC(wstore_expert_acquire_precision(r, 0, 0, -2, 0, &h), WSTORE_E_INVALID_ARGUMENT);
    CHECK_RC(wstore_expert_acquire_precision(r, 0, 0, WSTORE_PRECISION_Q4_0, 8, &h), WSTORE_E_INVALID_ARGUMENT);
    CHECK_RC(wstore_expert_acquire_precision(r, 0, 0, WSTORE_PRECISION_Q4_0, 0, NULL), WSTORE_E_INVALID_ARGUMENT);
    CHECK_RC(wstore_expert_acquire_precision(NULL, 0, 0, WSTORE_PRECISION_Q4_0, 0, &h), WSTORE_E_INVALID_ARGUMENT);
    CHECK_RC(wstore_expert_acquire_precision(r, 0, 9, WSTORE_PRECISION_Q4_0, 0, &h), WSTORE_E_NOT_FOUND);
    int32_t prec = -5;
    CHECK_RC(wstore_expert_precision(NULL, &prec), WSTORE_E_INVALID_ARGUMENT);

    /* The exact values, for reference. */
    float exact[256], got[256], mine[256];
    CHECK_RC(wstore_expert_acquire_precision(r, 0, 0, WSTORE_PRECISION_EXACT, 0, &h), WSTORE_OK);
    CHECK_RC(wstore_expert_precision(h, &prec), WSTORE_OK);
    CHECK(prec == WSTORE_PRECISION_EXACT, "precision %d", prec);
    size_t size = 0;
    const void *data = part_data(h, "up", &size);
    CHECK(data && size == sizeof exact, "exact up: %zu bytes", size);
    if (data) memcpy(exact, data, sizeof exact);
    wstore_part_blocks b;
    CHECK_RC(wstore_expert_part_blocks(h, "up", &b), WSTORE_OK);
    CHECK(b.precision == WSTORE_PRECISION_EXACT && b.dtype == WSTORE_DTYPE_F32 && b.blocks == 0 && b.elements == 256,
          "exact layout %d %d %lld", b.precision, b.dtype, (long long)b.blocks);
    CHECK_RC(wstore_expert_dequantize(h, "up", WSTORE_DTYPE_F32, got, sizeof got), WSTORE_OK);
    CHECK(memcmp(got, exact, sizeof got) == 0, "exact dequantize is a copy");
    CHECK_RC(wstore_expert_release(h), WSTORE_OK);

    /* Each low-bit copy, in a manager of its own (the exact copy would be preferred). */
    const int32_t precs[2] = {WSTORE_PRECISION_Q8_0, WSTORE_PRECISION_Q4_0};
    for (int k = 0; k < 2; k++) {
        wstore_residency *low = NULL;
        CHECK_RC(wstore_residency_open(st, "m", 1 << 20, "lru", 1, 0, &low), WSTORE_OK);
        CHECK_RC(wstore_expert_acquire_precision(low, 0, 0, precs[k], 0, &h), WSTORE_OK);
        CHECK_RC(wstore_expert_precision(h, &prec), WSTORE_OK);
        CHECK(prec == precs[k], "precision %d, want %d", prec, precs[k]);
        CHECK_RC(wstore_expert_part_blocks(h, "up", &b), WSTORE_OK);
        int q8 = precs[k] == WSTORE_PRECISION_Q8_0;
        CHECK(b.dtype == WSTORE_DTYPE_GGML && b.ggml_type == (q8 ? 8u : 2u) && b.block_elements == 32 &&
                  b.block_bytes == (q8 ? 34 : 18) && b.blocks == 8 && b.elements == 256 &&
                  b.scale_dtype == WSTORE_DTYPE_F16 && b.quant_bits == (q8 ? 8 : 4) && b.zero_point == (q8 ? 0 : 8),
              "block layout of %s", q8 ? "q8_0" : "q4_0");
        data = part_data(h, "up", &size);
        CHECK(data && size == (size_t)(b.blocks * b.block_bytes), "blocks: %zu bytes", size);
        const wstore_expert_part *parts = NULL;
        size_t count = 0;
        CHECK_RC(wstore_expert_parts(h, &parts, &count), WSTORE_OK);
        CHECK(count == 3 && parts[2].dtype == WSTORE_DTYPE_GGML && parts[2].rank == 2 && parts[2].shape[1] == 64,
              "parts lent with their logical shape");
        if (data) decode(data, &b, mine);
        CHECK_RC(wstore_expert_dequantize(h, "up", WSTORE_DTYPE_F32, got, sizeof got), WSTORE_OK);
        int agree = 1, close = 1;
        for (int i = 0; i < 256; i++) {
            if (got[i] != mine[i]) agree = 0;
            /* One quantization step of the block's largest magnitude, at most. */
            float amax = 0;
            for (int j = i / 32 * 32; j < i / 32 * 32 + 32; j++) amax = fmaxf(amax, fabsf(exact[j]));
            if (fabsf(got[i] - exact[i]) > amax / (q8 ? 127.0f : 8.0f) * 1.01f + 1e-6f) close = 0;
        }
        CHECK(agree, "the kernel agrees with blocks decoded from wstore_part_blocks");
        CHECK(close, "dequantized values within one step of the exact ones");
        uint16_t narrow[256];
        CHECK_RC(wstore_expert_dequantize(h, "up", WSTORE_DTYPE_BF16, narrow, sizeof narrow), WSTORE_OK);
        CHECK_RC(wstore_expert_dequantize(h, "up", WSTORE_DTYPE_F16, narrow, sizeof narrow), WSTORE_OK);
        CHECK_RC(wstore_expert_dequantize(h, "up", WSTORE_DTYPE_F16, narrow, sizeof narrow - 1), WSTORE_E_BUFFER_TOO_SMALL);
        CHECK_RC(wstore_expert_dequantize(h, "up", WSTORE_DTYPE_I8, narrow, sizeof narrow), WSTORE_E_INVALID_ARGUMENT);
        CHECK_RC(wstore_expert_dequantize(h, "up", 999, narrow, sizeof narrow), WSTORE_E_INVALID_ARGUMENT);
        CHECK_RC(wstore_expert_dequantize(h, "up", WSTORE_DTYPE_F32, NULL, sizeof got), WSTORE_E_INVALID_ARGUMENT);
        CHECK_RC(wstore_expert_dequantize(h, "nope", WSTORE_DTYPE_F32, got, sizeof got), WSTORE_E_NOT_FOUND);
        CHECK_RC(wstore_expert_part_blocks(h, "nope", &b), WSTORE_E_NOT_FOUND);
        CHECK_RC(wstore_expert_part_blocks(h, "up", NULL), WSTORE_E_INVALID_ARGUMENT);
        /* "Any" now hits the resident low-bit copy. */
        wstore_expert *any = NULL;
        int hit = 0;
        CHECK_RC(wstore_expert_acquire_precision(low, 0, 0, WSTORE_PRECISION_ANY, 0, &any), WSTORE_OK);
        CHECK_RC(wstore_expert_hit(any, &hit), WSTORE_OK);
        CHECK_RC(wstore_expert_precision(any, &prec), WSTORE_OK);
        CHECK(hit == 1 && prec == precs[k], "any: hit %d precision %d", hit, prec);
        CHECK_RC(wstore_expert_release(any), WSTORE_OK);
        CHECK_RC(wstore_expert_release(h), WSTORE_OK);
        CHECK_RC(wstore_expert_precision(h, &prec), WSTORE_E_INVALID_HANDLE);
        CHECK_RC(wstore_expert_dequantize(h, "up", WSTORE_DTYPE_F32, got, sizeof got), WSTORE_E_INVALID_HANDLE);
        CHECK_RC(wstore_residency_close(low), WSTORE_OK);
    }

    /* A set at mixed precisions: expert 0 exact (resident), expert 1 loaded as Q8_0. */
    wstore_expert *set[2] = {NULL, NULL};
    int hits[2] = {-1, -1};
    int64_t list[2] = {0, 1};
    CHECK_RC(wstore_expert_acquire_precision(r, 0, 0, WSTORE_PRECISION_EXACT, 0, &h), WSTORE_OK);
    CHECK_RC(wstore_expert_acquire_many_precision(r, 0, list, 2, WSTORE_PRECISION_Q8_0, WSTORE_ACQUIRE_UPGRADE, set, hits),
             WSTORE_OK);
    int32_t p0 = -1, p1 = -1;
    if (set[0] && set[1]) {
        wstore_expert_precision(set[0], &p0);
        wstore_expert_precision(set[1], &p1);
    }
    CHECK(p0 == WSTORE_PRECISION_EXACT && p1 == WSTORE_PRECISION_Q8_0 && hits[0] == 1 && hits[1] == 0,
          "set: %d %d, hits %d %d", p0, p1, hits[0], hits[1]);
    CHECK_RC(wstore_expert_acquire_many_precision(r, 0, list, 2, 5, 0, set, hits), WSTORE_E_INVALID_ARGUMENT);
    wstore_expert_release(set[0]);
    wstore_expert_release(set[1]);
    wstore_expert_release(h);
    CHECK_RC(wstore_residency_close(r), WSTORE_OK);
    CHECK_RC(wstore_close(st), WSTORE_OK);
    printf("precision_check: %d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
