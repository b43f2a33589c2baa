/*
 * check.h: the checks of the C test clients (abi_check.c, kv_check.c, precision_check.c).
 * CHECK counts a check and, when it fails, prints the condition, a message and wstore's
 * last error; CHECK_RC checks a call's status code. A client that checks from several
 * threads defines CHECK_LOCK() and CHECK_UNLOCK() before including this file.
 */
#ifndef WSTORE_TEST_CHECK_H
#define WSTORE_TEST_CHECK_H

#include <stdio.h>

#include "wstore.h"

#ifndef CHECK_LOCK
#define CHECK_LOCK()
#define CHECK_UNLOCK()
#endif

static int checks, failures;

#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        CHECK_LOCK();                                                          \
        checks++;                                                              \
        if (!(cond)) {                                                         \
            failures++;                                                        \
            printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);             \
            printf(__VA_ARGS__);                                               \
            printf(" (last error: %s)\n", wstore_last_error());                \
        }                                                                      \
        CHECK_UNLOCK();                                                        \
    } while (0)

#define CHECK_RC(call, want)                                                   \
    do {                                                                       \
        int rc_ = (call);                                                      \
        CHECK(rc_ == (want), "%s returned %s, want %s", #call,                 \
              wstore_status_name(rc_), wstore_status_name(want));              \
    } while (0)

#endif
