/*
 * checks.h -- the reporting shared by the bad-input programs (null_args.c, index_null_args.c,
 * train_null_args.c): one line per check, "N passed, M failed" at the end, EXPECT, which
 * checks a call's status and that it left a fresh, non-empty error message, sentinels for
 * checking that failed calls leave their outputs alone, copies of good inputs with one value
 * replaced, and scratch-file helpers.
 * A test helper, not part of the API: the programs otherwise use only seginf.h.
 */
#ifndef SEGINF_EXAMPLES_CHECKS_H
#define SEGINF_EXAMPLES_CHECKS_H

#include "seginf.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
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

/* ---- bad inputs made from good ones ---------------------------------------------------- */

#define CHECKS_COPY_MAX 64 /* the longest array the copies below hold */

/* A copy of `src` (len <= CHECKS_COPY_MAX floats) with one value replaced. */
static inline const float *with_value(const float *src, size_t len, size_t at, float value) {
    static float copy[CHECKS_COPY_MAX];
    memcpy(copy, src, len * sizeof *src);
    copy[at] = value;
    return copy;
}

/* A copy of `src` (len <= CHECKS_COPY_MAX labels) with one label replaced. */
static inline const uint32_t *label_at(const uint32_t *src, size_t len, size_t at,
                                       uint32_t label) {
    static uint32_t copy[CHECKS_COPY_MAX];
    memcpy(copy, src, len * sizeof *src);
    copy[at] = label;
    return copy;
}

/* ---- scratch files ---------------------------------------------------------------------- */

static char scratch_path[4096];

/* dir/name, in a static buffer (valid until the next call). */
static inline const char *scratch(const char *dir, const char *name) {
    snprintf(scratch_path, sizeof scratch_path, "%s/%s", dir, name);
    return scratch_path;
}

static inline int write_bytes(const char *path, const void *bytes, size_t len) {
    FILE *f = fopen(path, "wb");
    size_t done;
    if (f == NULL) return 0;
    done = fwrite(bytes, 1, len, f);
    return fclose(f) == 0 && done == len;
}

/* The whole file in a malloc'd buffer (free it), its length in *len; NULL on failure. */
static inline unsigned char *read_bytes(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    unsigned char *buf = NULL;
    long size;
    if (f == NULL) return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) > 0 && fseek(f, 0, SEEK_SET) == 0) {
        buf = malloc((size_t)size);
        if (buf != NULL && fread(buf, 1, (size_t)size, f) != (size_t)size) {
            free(buf);
            buf = NULL;
        }
        *len = (size_t)size;
    }
    fclose(f);
    return buf;
}

#endif /* SEGINF_EXAMPLES_CHECKS_H */
