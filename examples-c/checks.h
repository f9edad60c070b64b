/*
 * checks.h -- the reporting shared by the bad-input programs (null_args.c, index_null_args.c,
 * train_null_args.c): one line per check, "N passed, M failed" at the end, EXPECT, which
 * checks a call's status and that it left a fresh, non-empty error message, and sentinels for
 * checking that failed calls leave their outputs alone.
 * A test helper, not part of the API: the programs otherwise use only seginf.h.
 */
#ifndef SEGINF_EXAMPLES_CHECKS_H
#define SEGINF_EXAMPLES_CHECKS_H

#include "seginf.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static int passed = 0, failed = 0;

static void report(int ok, const char *fmt, ...) {
    va_list args;
    printf("%s ", ok ? "ok  " : "FAIL");
    va_start(args, fmt);
    vprintf(fmt, args);
    va_end(args);
    printf("\n");
    if (ok) {
        passed++;
    } else {
        failed++;
    }
}

#define CHECK(desc, cond) report((cond) != 0, "%s", (desc))

/* A fixture handle used to leave a recognisable message before each checked call, so that a
 * failing call which forgot to set its own message is caught (the message is per thread and
 * is not cleared by successful calls). Each program sets it before its checks. */
static const seginf_crf *g_crf;
#define PRIMED_TOKEN "424242"

static void prime_last_error(void) {
    size_t offset;
    seginf_crf_param_offset(g_crf, 424242, &offset);
}

/* The last error message into buf ("" on failure to read it). */
static void last_message(char *buf, size_t len, size_t *written) {
    buf[0] = '\0';
    seginf_last_error_message(buf, len, written);
}

/* Checks the status of a call made right after prime_last_error(). For errors, the message
 * must be non-empty, new, and contain `needle` when that is not NULL. */
static void expect_status(const char *desc, seginf_status got, seginf_status want,
                          const char *needle) {
    char msg[1024];
    size_t written = 0;
    int ok;
    last_message(msg, sizeof msg, &written);
    if (want == SEGINF_OK) {
        ok = got == SEGINF_OK;
        report(ok, "%s: %s%s%s", desc, seginf_status_name(got), ok ? "" : ": ", ok ? "" : msg);
        return;
    }
    ok = got == want && written > 0 && msg[0] != '\0' && strstr(msg, PRIMED_TOKEN) == NULL &&
         (needle == NULL || strstr(msg, needle) != NULL);
    if (ok) {
        report(1, "%s: %s: %s", desc, seginf_status_name(got), msg);
    } else {
        report(0, "%s: got %s, want %s; message \"%s\"%s%s", desc, seginf_status_name(got),
               seginf_status_name(want), msg, needle ? ", should contain " : "",
               needle ? needle : "");
    }
}

#define EXPECT(desc, want, needle, call) \
    expect_status((desc), (prime_last_error(), (call)), (want), (needle))

/* ---- sentinels for "outputs are written only on success" ------------------------------ */

#define SENTINEL_F64 (-123456.75)
#define SENTINEL_U32 0xDEADBEEFu
#define SENTINEL_SIZE ((size_t)0xFEEDFACEu)
static char sentinel_object;
/* A recognisable non-NULL handle pointer, to check *out handles are left alone. */
#define SENTINEL(type) ((type *)(void *)&sentinel_object)

static inline void fill_f64(double *v, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) v[i] = SENTINEL_F64;
}
static inline int kept_f64(const double *v, size_t n) {
    size_t i;
    for (i = 0; i < n; i++)
        if (v[i] != SENTINEL_F64) return 0;
    return 1;
}
static inline void fill_u32(uint32_t *v, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) v[i] = SENTINEL_U32;
}
static inline int kept_u32(const uint32_t *v, size_t n) {
    size_t i;
    for (i = 0; i < n; i++)
        if (v[i] != SENTINEL_U32) return 0;
    return 1;
}
static inline void fill_size(size_t *v, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) v[i] = SENTINEL_SIZE;
}
static inline int kept_size(const size_t *v, size_t n) {
    size_t i;
    for (i = 0; i < n; i++)
        if (v[i] != SENTINEL_SIZE) return 0;
    return 1;
}

#endif /* SEGINF_EXAMPLES_CHECKS_H */
