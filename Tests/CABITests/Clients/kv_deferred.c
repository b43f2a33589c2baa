/*
 * kv_deferred: deferred KV commits through include/wstore.h, and what a crash of the
 * engine's process leaves. Run by CABITests:
 *
 *   kv_deferred DIR
 *
 * A child process creates a KV store in DIR/kv, sets it deferred, stores a prompt's KV and
 * kills itself with SIGKILL before closing anything. The parent (which touched wstore
 * only after the child died) then finds the marker of deferred commits, opens the store,
 * gets the whole prompt back bit for bit, and sees the marker settled. It also checks the
 * misuse codes of wstore_kv_set_durability and wstore_kv_sync. Prints one line per failed
 * check and exits 1 if any.
 */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

enum { LAYERS = 2, TOKENS = 96, HEADS = 2, DIM = 16, CHUNK = 32 };

static uint16_t k_in[LAYERS][TOKENS * HEADS * DIM], v_in[LAYERS][TOKENS * HEADS * DIM];
static uint16_t k_out[LAYERS][TOKENS * HEADS * DIM], v_out[LAYERS][TOKENS * HEADS * DIM];
static uint32_t ids[TOKENS];

static void layers_of(uint16_t (*k)[TOKENS * HEADS * DIM], uint16_t (*v)[TOKENS * HEADS * DIM],
                      wstore_kv_layer *out) {
    for (int l = 0; l < LAYERS; l++)
        out[l] = (wstore_kv_layer){k[l], v[l], WSTORE_DTYPE_BF16, HEADS, DIM, 0, HEADS * DIM * 2, 0};
}

/* The child: store deferred, then die without closing. */
static void write_and_die(const char *path) {
    wstore_kv_options o = {0};
    o.chunk_tokens = CHUNK;
    wstore_kv *kv = NULL;
    if (wstore_kv_create(path, &o, &kv) != WSTORE_OK) _exit(2);
    if (wstore_kv_set_durability(kv, WSTORE_KV_DEFERRED) != WSTORE_OK) _exit(3);
    wstore_kv_layer layers[LAYERS];
    layers_of(k_in, v_in, layers);
    size_t cached = 0;
    if (wstore_kv_store(kv, "m", NULL, ids, TOKENS, layers, LAYERS, &cached) != WSTORE_OK || cached != TOKENS)
        _exit(4);
    raise(SIGKILL);
    _exit(5);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: kv_deferred DIR\n");
        return 2;
    }
    char path[4096], marker[4200];
    snprintf(path, sizeof path, "%s/kv", argv[1]);
    snprintf(marker, sizeof marker, "%s/deferred-commits", path);
    for (int t = 0; t < TOKENS; t++) ids[t] = 1000u + (uint32_t)t * 7u;
    for (int l = 0; l < LAYERS; l++)
        for (int i = 0; i < TOKENS * HEADS * DIM; i++) {
            k_in[l][i] = (uint16_t)(0x3c00 + ((i * 13 + l * 7) & 0x3ff));
            v_in[l][i] = (uint16_t)(0xbc00 + ((i * 29 + l * 3) & 0x3ff));
        }

    pid_t child = fork();
    if (child < 0) {
        perror("fork");
        return 2;
    }
    if (child == 0) write_and_die(path);
    int status = 0;
    waitpid(child, &status, 0);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "the writer ended with status 0x%x, not SIGKILL",
          status);
    CHECK(access(marker, F_OK) == 0, "no marker of deferred commits after the writer died");

    /* A read-only open leaves the marker; the whole prompt is there. */
    wstore_kv *ro = NULL;
    CHECK_RC(wstore_kv_open(path, 1, 1, &ro), WSTORE_OK);
    wstore_kv_layer out[LAYERS];
    layers_of(k_out, v_out, out);
    wstore_kv_lookup_result got;
    memset(&got, 0, sizeof got);
    CHECK_RC(wstore_kv_lookup(ro, "m", NULL, ids, TOKENS, out, LAYERS, &got), WSTORE_OK);
    CHECK(got.tokens == TOKENS, "read-only lookup found %zu tokens, want %d", (size_t)got.tokens, TOKENS);
    CHECK(memcmp(k_in, k_out, sizeof k_in) == 0 && memcmp(v_in, v_out, sizeof v_in) == 0,
          "the KV read back differs from the KV stored");
    CHECK_RC(wstore_kv_set_durability(ro, WSTORE_KV_DEFERRED), WSTORE_E_INVALID_ARGUMENT);
    CHECK_RC(wstore_kv_sync(ro), WSTORE_OK);
    CHECK(access(marker, F_OK) == 0, "a read-only open removed the marker");
    CHECK_RC(wstore_kv_close(ro), WSTORE_OK);

    /* A writable open settles the abandoned marker: it syncs and removes it. */
    wstore_kv *kv = NULL;
    CHECK_RC(wstore_kv_open(path, 0, 1, &kv), WSTORE_OK);
    CHECK(access(marker, F_OK) != 0, "the writable open left the abandoned marker");
    memset(k_out, 0, sizeof k_out);
    memset(v_out, 0, sizeof v_out);
    CHECK_RC(wstore_kv_lookup(kv, "m", NULL, ids, TOKENS, out, LAYERS, &got), WSTORE_OK);
    CHECK(got.tokens == TOKENS && memcmp(k_in, k_out, sizeof k_in) == 0 && memcmp(v_in, v_out, sizeof v_in) == 0,
          "the KV read back after settling differs");

    /* Misuse gets codes. */
    CHECK_RC(wstore_kv_set_durability(kv, 7), WSTORE_E_INVALID_ARGUMENT);
    CHECK_RC(wstore_kv_set_durability(kv, -1), WSTORE_E_INVALID_ARGUMENT);
    CHECK_RC(wstore_kv_set_durability(NULL, WSTORE_KV_DEFERRED), WSTORE_E_INVALID_ARGUMENT);
    CHECK_RC(wstore_kv_sync(NULL), WSTORE_E_INVALID_ARGUMENT);

    /* Deferred, then closed: the close syncs and the marker goes. */
    CHECK_RC(wstore_kv_set_durability(kv, WSTORE_KV_DEFERRED), WSTORE_OK);
    CHECK(access(marker, F_OK) == 0, "no marker while the handle defers");
    CHECK_RC(wstore_kv_sync(kv), WSTORE_OK);
    CHECK_RC(wstore_kv_close(kv), WSTORE_OK);
    CHECK(access(marker, F_OK) != 0, "the marker outlived the last deferred handle");
    CHECK_RC(wstore_kv_sync(kv), WSTORE_E_INVALID_HANDLE);
    CHECK_RC(wstore_kv_set_durability(kv, WSTORE_KV_SYNCED), WSTORE_E_INVALID_HANDLE);

    printf("kv_deferred: %d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
