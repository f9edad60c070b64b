/*
 * null_args.c -- every seginf entry point fed bad input: NULL for each pointer in turn, n = 0,
 * mismatched lengths, labels >= C, first > last, last >= n, NaN/inf values, unknown enum values,
 * misaligned pointers, impossible gold labels, and missing, garbage and malformed safetensors
 * files (DESIGN.md section 4: "NULL pointers and bad lengths are errors, not undefined
 * behaviour"; "outputs are written only on success").
 *
 * For each failing call it checks the exact status, that seginf_last_error_message() gives a
 * fresh, non-empty message (and, where useful, that it names the argument), and that the output
 * buffers, pre-filled with sentinels, are untouched. Run under AddressSanitizer + UBSan by
 * tests/c_abi.rs, so a crash, an out-of-bounds access or a leak also fails.
 *
 * Prints one line per check and a final "N passed, M failed"; exits nonzero on any failure.
 * Usage: null_args [scratch-dir]   (small safetensors files are written there; default ".")
 */

#include "seginf.h"

#include "checks.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reporting (report, CHECK, EXPECT, g_crf, last_message) and the common sentinels
 * (SENTINEL_..., fill_ and kept_ for f64, u32, size_t) are shared: checks.h. */

/* ---- sentinels beyond those of checks.h ------------------------------------------------- */

#define SENTINEL_U8 0xA5u
#define SENTINEL_CRF SENTINEL(seginf_crf)
#define SENTINEL_OPTS SENTINEL(seginf_load_options)

static void fill_u8(uint8_t *v, size_t n) { memset(v, SENTINEL_U8, n); }
static int kept_u8(const uint8_t *v, size_t n) {
    size_t i;
    for (i = 0; i < n; i++)
        if (v[i] != SENTINEL_U8) return 0;
    return 1;
}

/* ---- fixtures -------------------------------------------------------------------------- */

#define C 3 /* O, B-X, I-X */
#define D 2
#define N 4
#define BIG 64 /* room for any output buffer below */

static const char *const NAMES[C] = {"O", "B-X", "I-X"};
static const float WEIGHTS[C * D] = {0.5f, -0.25f, 0.25f, 0.5f, -0.5f, 0.25f};
static const float BIAS[C] = {0.125f, -0.25f, 0.0625f};
/* O -> I-X is forbidden. */
static const float TRANSITIONS[C * C] = {0.25f, 0.5f, -INFINITY, -0.125f, 0.0f,
                                         0.75f, 0.375f, -0.5f,    0.25f};
static const float START[C] = {0.125f, 0.25f, -0.5f};
static const float END[C] = {0.0f, -0.25f, 0.125f};
static const float FEATURES[N * D] = {1.0f, -0.5f, 0.25f, 0.75f, -1.0f, 0.5f, 0.0f, 2.0f};
static const uint32_t GOLD[N] = {1, 2, 0, 0};
/* Uses O -> I-X at positions 0..1: impossible under the -inf transition. */
static const uint32_t IMPOSSIBLE[N] = {0, 2, 0, 0};

/* A copy of FEATURES with one value replaced. */
static const float *features_with(float value, size_t at) {
    static float copy[N * D];
    memcpy(copy, FEATURES, sizeof copy);
    copy[at] = value;
    return copy;
}

/* ---- tiny safetensors writer ------------------------------------------------------------ */

/* u64 little-endian header length, the JSON header padded with spaces to 8 bytes, then `data`. */
static int write_safetensors(const char *path, const char *json, const void *data,
                             size_t data_len) {
    unsigned char buf[2048];
    size_t header = strlen(json), padded = (header + 7) / 8 * 8, i;
    if (8 + padded + data_len > sizeof buf) return 0;
    for (i = 0; i < 8; i++) {
        buf[i] = (unsigned char)(((unsigned long long)padded >> (8 * i)) & 0xff);
    }
    memcpy(buf + 8, json, header);
    memset(buf + 8 + header, ' ', padded - header);
    memcpy(buf + 8 + padded, data, data_len);
    return write_bytes(path, buf, 8 + padded + data_len);
}

/* One entry of a safetensors JSON header; shape and offsets as text, e.g. "2,1" and "0", "8". */
#define TENSOR(name, dtype, shape, begin, end)                                        \
    "\"" name "\":{\"dtype\":\"" dtype "\",\"shape\":[" shape "],\"data_offsets\":[" begin \
    "," end "]}"
/* A header for `weight` (8 bytes of data) then F32 `transitions` 2 x 2 (16 bytes). */
#define WEIGHT_AND_TRANSITIONS(weight_dtype, weight_shape)           \
    "{" TENSOR("weight", weight_dtype, weight_shape, "0", "8") "," \
        TENSOR("transitions", "F32", "2,2", "8", "24") "}"

/* Little-endian f32 bytes of `values`. */
static void le_f32(unsigned char *out, const float *values, size_t n) {
    size_t i;
    int b;
    for (i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &values[i], sizeof bits);
        for (b = 0; b < 4; b++) out[4 * i + (size_t)b] = (unsigned char)((bits >> (8 * b)) & 0xff);
    }
}

/* ---- the checks, one function per entry point (or group) --------------------------------- */

static void check_version_and_names(void) {
    char want[64];
    static const char *const names[] = {
        "SEGINF_OK", "SEGINF_ERR_NULL_ARGUMENT", "SEGINF_ERR_INVALID_ARGUMENT",
        "SEGINF_ERR_DIMENSION_MISMATCH", "SEGINF_ERR_LABEL_OUT_OF_RANGE",
        "SEGINF_ERR_BAD_SEGMENT", "SEGINF_ERR_NON_FINITE", "SEGINF_ERR_IMPOSSIBLE_LABELS",
        "SEGINF_ERR_IO", "SEGINF_ERR_FORMAT", "SEGINF_ERR_MODEL_MISMATCH",
        "SEGINF_ERR_UNSUPPORTED", "SEGINF_ERR_CANCELLED", "SEGINF_ERR_PANIC",
        "SEGINF_ERR_NOT_CONVERGED"};
    int32_t s;
    int all = 1;
    snprintf(want, sizeof want, "%d.%d.%d", SEGINF_VERSION_MAJOR, SEGINF_VERSION_MINOR,
             SEGINF_VERSION_PATCH);
    CHECK("seginf_version() matches SEGINF_VERSION_MAJOR.MINOR.PATCH",
          seginf_version() != NULL && strcmp(seginf_version(), want) == 0);
    int tiles = seginf_tiles_available();
    CHECK("seginf_tiles_available() is 0 or 1, the same on the next call",
          (tiles == 0 || tiles == 1) && seginf_tiles_available() == tiles);
    for (s = 0; s >= -14; s--) {
        const char *name = seginf_status_name(s);
        if (name == NULL || strcmp(name, names[-s]) != 0) {
            all = 0;
            printf("  status %d is named %s, want %s\n", (int)s, name ? name : "(null)", names[-s]);
        }
    }
    CHECK("seginf_status_name names statuses 0 to -14", all);
    CHECK("seginf_status_name(SEGINF_ERR_PANIC) is its enumerator's name",
          strcmp(seginf_status_name(SEGINF_ERR_PANIC), "SEGINF_ERR_PANIC") == 0);
    CHECK("seginf_status_name(-15) is SEGINF_UNKNOWN_STATUS",
          strcmp(seginf_status_name(-15), "SEGINF_UNKNOWN_STATUS") == 0);
    CHECK("seginf_status_name(1) is SEGINF_UNKNOWN_STATUS",
          strcmp(seginf_status_name(1), "SEGINF_UNKNOWN_STATUS") == 0);
    CHECK("seginf_status_name(INT32_MIN) is SEGINF_UNKNOWN_STATUS",
          strcmp(seginf_status_name(INT32_MIN), "SEGINF_UNKNOWN_STATUS") == 0);
}

static void check_last_error_message(void) {
    char full[1024], buf[64];
    size_t written = SENTINEL_SIZE, len;
    const char *bad_names[C] = {"O", "\xC3\x9C", "I-X"}; /* U+00DC, two bytes in UTF-8 */
    const char *umlaut;
    uint8_t trans[C * C], start[C], end[C];

    prime_last_error();
    last_message(full, sizeof full, &len);
    CHECK("last_error_message: full message with its length",
          len == strlen(full) && strstr(full, PRIMED_TOKEN) != NULL);

    written = SENTINEL_SIZE;
    CHECK("last_error_message(NULL, 0, &written) asks for the length",
          seginf_last_error_message(NULL, 0, &written) == SEGINF_OK && written == len);
    written = SENTINEL_SIZE;
    CHECK("last_error_message(NULL, 5, &written) is SEGINF_ERR_NULL_ARGUMENT, nothing written",
          seginf_last_error_message(NULL, 5, &written) == SEGINF_ERR_NULL_ARGUMENT &&
              written == SENTINEL_SIZE);
    last_message(buf, sizeof buf, NULL);
    CHECK("last_error_message does not overwrite the message it reports",
          strncmp(buf, full, sizeof buf - 1) == 0);
    memset(buf, 'x', sizeof buf);
    CHECK("last_error_message(buf, 1, NULL) writes only the NUL",
          seginf_last_error_message(buf, 1, NULL) == SEGINF_OK && buf[0] == '\0' && buf[1] == 'x');
    memset(buf, 'x', sizeof buf);
    written = 0;
    CHECK("last_error_message(buf, 6, &written) truncates to 5 bytes, reports the full length",
          seginf_last_error_message(buf, 6, &written) == SEGINF_OK && strlen(buf) == 5 &&
              strncmp(buf, full, 5) == 0 && buf[6] == 'x' && written == len);

    /* A message with a two-byte character, truncated in the middle of it. */
    EXPECT("constraint_mask: name \"\\xC3\\x9C\" is not a BIO tag", SEGINF_ERR_INVALID_ARGUMENT,
           "\xC3\x9C",
           seginf_constraint_mask(SEGINF_TAG_SCHEME_BIO, bad_names, C, trans, start, end));
    last_message(full, sizeof full, &len);
    umlaut = strstr(full, "\xC3\x9C");
    if (umlaut != NULL) {
        size_t before = (size_t)(umlaut - full);
        memset(buf, 'x', sizeof buf);
        seginf_last_error_message(buf, before + 2, NULL);
        CHECK("last_error_message truncates at a UTF-8 character boundary",
              strlen(buf) == before && strncmp(buf, full, before) == 0);
    } else {
        CHECK("last_error_message keeps UTF-8 in messages", 0);
    }
    last_message(buf, sizeof buf, NULL);
    CHECK("last_error_message is stable across reads", strncmp(buf, full, sizeof buf - 1) == 0);
}

static void check_crf_new(void) {
    seginf_crf *out = SENTINEL_CRF;
    const float *w = WEIGHTS, *a = TRANSITIONS;

    EXPECT("crf_new: weights NULL", SEGINF_ERR_NULL_ARGUMENT, "`weights`",
           seginf_crf_new(C, D, NULL, BIAS, a, START, END, &out));
    EXPECT("crf_new: transitions NULL", SEGINF_ERR_NULL_ARGUMENT, "`transitions`",
           seginf_crf_new(C, D, w, BIAS, NULL, START, END, &out));
    EXPECT("crf_new: out NULL", SEGINF_ERR_NULL_ARGUMENT, "`out`",
           seginf_crf_new(C, D, w, BIAS, a, START, END, NULL));
    EXPECT("crf_new: num_labels = 0", SEGINF_ERR_INVALID_ARGUMENT, "num_labels",
           seginf_crf_new(0, D, w, BIAS, a, START, END, &out));
    EXPECT("crf_new: feature_dim = 0", SEGINF_ERR_INVALID_ARGUMENT, "feature_dim",
           seginf_crf_new(C, 0, w, BIAS, a, START, END, &out));
    EXPECT("crf_new: num_labels x feature_dim overflows", SEGINF_ERR_INVALID_ARGUMENT, NULL,
           seginf_crf_new(SIZE_MAX, 2, w, BIAS, a, START, END, &out));
    EXPECT("crf_new: NaN in weights", SEGINF_ERR_NON_FINITE, "weights",
           seginf_crf_new(C, D, with_value(w, C * D, 3, NAN), BIAS, a, START, END, &out));
    EXPECT("crf_new: +inf in weights", SEGINF_ERR_NON_FINITE, "weights",
           seginf_crf_new(C, D, with_value(w, C * D, 0, INFINITY), BIAS, a, START, END, &out));
    EXPECT("crf_new: -inf in weights", SEGINF_ERR_NON_FINITE, "weights",
           seginf_crf_new(C, D, with_value(w, C * D, 5, -INFINITY), BIAS, a, START, END, &out));
    EXPECT("crf_new: NaN in bias", SEGINF_ERR_NON_FINITE, "bias",
           seginf_crf_new(C, D, w, with_value(BIAS, C, 1, NAN), a, START, END, &out));
    EXPECT("crf_new: -inf in bias", SEGINF_ERR_NON_FINITE, "bias",
           seginf_crf_new(C, D, w, with_value(BIAS, C, 1, -INFINITY), a, START, END, &out));
    EXPECT("crf_new: +inf in transitions", SEGINF_ERR_NON_FINITE, "transitions",
           seginf_crf_new(C, D, w, BIAS, with_value(a, C * C, 4, INFINITY), START, END, &out));
    EXPECT("crf_new: NaN in transitions", SEGINF_ERR_NON_FINITE, "transitions",
           seginf_crf_new(C, D, w, BIAS, with_value(a, C * C, 8, NAN), START, END, &out));
    EXPECT("crf_new: +inf in start", SEGINF_ERR_NON_FINITE, "start",
           seginf_crf_new(C, D, w, BIAS, a, with_value(START, C, 0, INFINITY), END, &out));
    EXPECT("crf_new: NaN in end", SEGINF_ERR_NON_FINITE, "end",
           seginf_crf_new(C, D, w, BIAS, a, START, with_value(END, C, 2, NAN), &out));
    CHECK("crf_new: *out untouched by every failure", out == SENTINEL_CRF);

    EXPECT("crf_new: -inf in start is allowed (forbidden start)", SEGINF_OK, NULL,
           seginf_crf_new(C, D, w, BIAS, a, with_value(START, C, 2, -INFINITY), END, &out));
    CHECK("crf_new: *out set on success", out != SENTINEL_CRF && out != NULL);
    seginf_crf_free(out == SENTINEL_CRF ? NULL : out);
    out = SENTINEL_CRF;
    EXPECT("crf_new: bias, start, end NULL mean absent", SEGINF_OK, NULL,
           seginf_crf_new(C, D, w, NULL, a, NULL, NULL, &out));
    CHECK("crf_new: without b, s, e num_params = C*d + C*C",
          out != SENTINEL_CRF && seginf_crf_num_params(out) == C * D + C * C);
    seginf_crf_free(out == SENTINEL_CRF ? NULL : out);
}

static void check_free_and_getters(const seginf_crf *crf) {
    seginf_crf_free(NULL);
    seginf_load_options_free(NULL);
    CHECK("crf_free(NULL) and load_options_free(NULL) are no-ops", 1);
    CHECK("crf_num_labels(NULL) = 0", seginf_crf_num_labels(NULL) == 0);
    CHECK("crf_feature_dim(NULL) = 0", seginf_crf_feature_dim(NULL) == 0);
    CHECK("crf_num_params(NULL) = 0", seginf_crf_num_params(NULL) == 0);
    CHECK("crf_num_labels = C", seginf_crf_num_labels(crf) == C);
    CHECK("crf_feature_dim = d", seginf_crf_feature_dim(crf) == D);
    CHECK("crf_num_params = C*d + C*C + 3C", seginf_crf_num_params(crf) == C * D + C * C + 3 * C);
}

static void check_param_offset_and_params(const seginf_crf *crf, const seginf_crf *no_bias) {
    size_t offset = SENTINEL_SIZE, p = seginf_crf_num_params(crf);
    double params[BIG];

    EXPECT("param_offset: crf NULL", SEGINF_ERR_NULL_ARGUMENT, "`crf`",
           seginf_crf_param_offset(NULL, SEGINF_PARAM_BIAS, &offset));
    EXPECT("param_offset: offset_out NULL", SEGINF_ERR_NULL_ARGUMENT, "`offset_out`",
           seginf_crf_param_offset(crf, SEGINF_PARAM_BIAS, NULL));
    EXPECT("param_offset: param 5 unknown", SEGINF_ERR_INVALID_ARGUMENT, "5",
           seginf_crf_param_offset(crf, 5, &offset));
    EXPECT("param_offset: param -1 unknown", SEGINF_ERR_INVALID_ARGUMENT, "-1",
           seginf_crf_param_offset(crf, -1, &offset));
    CHECK("param_offset: offset untouched by failures", offset == SENTINEL_SIZE);
    EXPECT("param_offset: absent bias", SEGINF_OK, NULL,
           seginf_crf_param_offset(no_bias, SEGINF_PARAM_BIAS, &offset));
    CHECK("param_offset: absent block is SIZE_MAX", offset == SIZE_MAX);
    EXPECT("param_offset: transitions", SEGINF_OK, NULL,
           seginf_crf_param_offset(crf, SEGINF_PARAM_TRANSITIONS, &offset));
    CHECK("param_offset: transitions after W and b", offset == C * D + C);

    fill_f64(params, BIG);
    EXPECT("get_params: crf NULL", SEGINF_ERR_NULL_ARGUMENT, "`crf`",
           seginf_crf_get_params(NULL, params, p));
    EXPECT("get_params: out NULL", SEGINF_ERR_NULL_ARGUMENT, "`out`",
           seginf_crf_get_params(crf, NULL, p));
    EXPECT("get_params: len = num_params - 1", SEGINF_ERR_DIMENSION_MISMATCH, NULL,
           seginf_crf_get_params(crf, params, p - 1));
    EXPECT("get_params: len = num_params + 1", SEGINF_ERR_DIMENSION_MISMATCH, NULL,
           seginf_crf_get_params(crf, params, p + 1));
    EXPECT("get_params: len = 0", SEGINF_ERR_DIMENSION_MISMATCH, NULL,
           seginf_crf_get_params(crf, params, 0));
    CHECK("get_params: buffer untouched by failures", kept_f64(params, BIG));
    EXPECT("get_params: len = num_params", SEGINF_OK, NULL, seginf_crf_get_params(crf, params, p));
    CHECK("get_params: -inf transition kept, nothing past len",
          params[C * D + C + 2] == -INFINITY && params[0] == 0.5 && kept_f64(params + p, BIG - p));
}

/* viterbi, log_likelihood, log_partition, marginals, pairwise_marginals. */
static void check_inference(const seginf_crf *crf, const seginf_crf *no_path) {
    const float *x = FEATURES;
    float nan_features[N * D], blocked[2] = {0.5f, -0.5f};
    uint32_t path[BIG], two_labels[2] = {0, 1};
    double out[BIG], score = SENTINEL_F64;
    unsigned char raw[sizeof(double) * 4];
    double *misaligned_f64 = (double *)(void *)(raw + 1);
    const float *misaligned_features = (const float *)(const void *)(raw + 1);

    memcpy(nan_features, FEATURES, sizeof nan_features);
    nan_features[5] = NAN;

    /* viterbi */
    fill_u32(path, BIG);
    EXPECT("viterbi: crf NULL", SEGINF_ERR_NULL_ARGUMENT, "`crf`",
           seginf_crf_viterbi(NULL, x, N, path, &score));
    EXPECT("viterbi: features NULL", SEGINF_ERR_NULL_ARGUMENT, "`features`",
           seginf_crf_viterbi(crf, NULL, N, path, &score));
    EXPECT("viterbi: labels_out NULL", SEGINF_ERR_NULL_ARGUMENT, "`labels_out`",
           seginf_crf_viterbi(crf, x, N, NULL, &score));
    EXPECT("viterbi: n = 0", SEGINF_ERR_INVALID_ARGUMENT, "n = 0",
           seginf_crf_viterbi(crf, x, 0, path, &score));
    EXPECT("viterbi: n x d overflows", SEGINF_ERR_INVALID_ARGUMENT, NULL,
           seginf_crf_viterbi(crf, x, SIZE_MAX, path, &score));
    EXPECT("viterbi: NaN feature", SEGINF_ERR_NON_FINITE, "features[2][1]",
           seginf_crf_viterbi(crf, nan_features, N, path, &score));
    EXPECT("viterbi: +inf feature", SEGINF_ERR_NON_FINITE, "features",
           seginf_crf_viterbi(crf, features_with(INFINITY, 0), N, path, &score));
    EXPECT("viterbi: -inf feature", SEGINF_ERR_NON_FINITE, "features",
           seginf_crf_viterbi(crf, features_with(-INFINITY, 7), N, path, &score));
    EXPECT("viterbi: misaligned features", SEGINF_ERR_INVALID_ARGUMENT, "aligned",
           seginf_crf_viterbi(crf, misaligned_features, 1, path, &score));
    EXPECT("viterbi: no labelling allowed", SEGINF_ERR_IMPOSSIBLE_LABELS, NULL,
           seginf_crf_viterbi(no_path, blocked, 2, path, &score));
    CHECK("viterbi: labels_out and score_out untouched by failures",
          kept_u32(path, BIG) && score == SENTINEL_F64);
    EXPECT("viterbi: misaligned score_out", SEGINF_ERR_INVALID_ARGUMENT, "score_out",
           seginf_crf_viterbi(crf, x, N, path, misaligned_f64));
    CHECK("viterbi: misaligned score_out leaves labels_out untouched (no partial success)",
          kept_u32(path, BIG));
    EXPECT("viterbi: score_out NULL is allowed", SEGINF_OK, NULL,
           seginf_crf_viterbi(crf, x, N, path, NULL));
    CHECK("viterbi: writes exactly n labels, each < C",
          path[0] < C && path[N - 1] < C && kept_u32(path + N, BIG - N));

    /* log_likelihood */
    fill_f64(out, BIG);
    EXPECT("log_likelihood: crf NULL", SEGINF_ERR_NULL_ARGUMENT, "`crf`",
           seginf_crf_log_likelihood(NULL, x, N, GOLD, out));
    EXPECT("log_likelihood: features NULL", SEGINF_ERR_NULL_ARGUMENT, "`features`",
           seginf_crf_log_likelihood(crf, NULL, N, GOLD, out));
    EXPECT("log_likelihood: labels NULL", SEGINF_ERR_NULL_ARGUMENT, "`labels`",
           seginf_crf_log_likelihood(crf, x, N, NULL, out));
    EXPECT("log_likelihood: out NULL", SEGINF_ERR_NULL_ARGUMENT, "`out`",
           seginf_crf_log_likelihood(crf, x, N, GOLD, NULL));
    EXPECT("log_likelihood: n = 0", SEGINF_ERR_INVALID_ARGUMENT, "n = 0",
           seginf_crf_log_likelihood(crf, x, 0, GOLD, out));
    EXPECT("log_likelihood: label = C", SEGINF_ERR_LABEL_OUT_OF_RANGE, "labels[2]",
           seginf_crf_log_likelihood(crf, x, N, label_at(GOLD, N, 2, C), out));
    EXPECT("log_likelihood: label = UINT32_MAX", SEGINF_ERR_LABEL_OUT_OF_RANGE, "labels[3]",
           seginf_crf_log_likelihood(crf, x, N, label_at(GOLD, N, 3, UINT32_MAX), out));
    EXPECT("log_likelihood: NaN feature", SEGINF_ERR_NON_FINITE, "features",
           seginf_crf_log_likelihood(crf, nan_features, N, GOLD, out));
    EXPECT("log_likelihood: no labelling allowed", SEGINF_ERR_IMPOSSIBLE_LABELS, NULL,
           seginf_crf_log_likelihood(no_path, blocked, 2, two_labels, out));
    EXPECT("log_likelihood: misaligned out", SEGINF_ERR_INVALID_ARGUMENT, "aligned",
           seginf_crf_log_likelihood(crf, x, N, GOLD, misaligned_f64));
    CHECK("log_likelihood: out untouched by failures", kept_f64(out, BIG));
    EXPECT("log_likelihood: impossible gold labels", SEGINF_OK, NULL,
           seginf_crf_log_likelihood(crf, x, N, IMPOSSIBLE, out));
    CHECK("log_likelihood: impossible gold labels give -inf", out[0] == -INFINITY);

    /* log_partition */
    fill_f64(out, BIG);
    EXPECT("log_partition: crf NULL", SEGINF_ERR_NULL_ARGUMENT, "`crf`",
           seginf_crf_log_partition(NULL, x, N, out));
    EXPECT("log_partition: features NULL", SEGINF_ERR_NULL_ARGUMENT, "`features`",
           seginf_crf_log_partition(crf, NULL, N, out));
    EXPECT("log_partition: out NULL", SEGINF_ERR_NULL_ARGUMENT, "`out`",
           seginf_crf_log_partition(crf, x, N, NULL));
    EXPECT("log_partition: n = 0", SEGINF_ERR_INVALID_ARGUMENT, "n = 0",
           seginf_crf_log_partition(crf, x, 0, out));
    EXPECT("log_partition: +inf feature", SEGINF_ERR_NON_FINITE, "features",
           seginf_crf_log_partition(crf, features_with(INFINITY, 3), N, out));
    CHECK("log_partition: out untouched by failures", kept_f64(out, BIG));
    EXPECT("log_partition: no labelling allowed", SEGINF_OK, NULL,
           seginf_crf_log_partition(no_path, blocked, 2, out));
    CHECK("log_partition: no labelling allowed gives -inf", out[0] == -INFINITY);

    /* marginals */
    fill_f64(out, BIG);
    EXPECT("marginals: crf NULL", SEGINF_ERR_NULL_ARGUMENT, "`crf`",
           seginf_crf_marginals(NULL, x, N, out));
    EXPECT("marginals: features NULL", SEGINF_ERR_NULL_ARGUMENT, "`features`",
           seginf_crf_marginals(crf, NULL, N, out));
    EXPECT("marginals: out NULL", SEGINF_ERR_NULL_ARGUMENT, "`out`",
           seginf_crf_marginals(crf, x, N, NULL));
    EXPECT("marginals: n = 0", SEGINF_ERR_INVALID_ARGUMENT, "n = 0",
           seginf_crf_marginals(crf, x, 0, out));
    EXPECT("marginals: NaN feature", SEGINF_ERR_NON_FINITE, "features",
           seginf_crf_marginals(crf, nan_features, N, out));
    EXPECT("marginals: no labelling allowed", SEGINF_ERR_IMPOSSIBLE_LABELS, NULL,
           seginf_crf_marginals(no_path, blocked, 2, out));
    CHECK("marginals: out untouched by failures", kept_f64(out, BIG));
    EXPECT("marginals: valid", SEGINF_OK, NULL, seginf_crf_marginals(crf, x, N, out));
    CHECK("marginals: writes exactly n x C values, rows sum to 1",
          fabs(out[0] + out[1] + out[2] - 1.0) < 1e-12 && kept_f64(out + N * C, BIG - N * C));

    /* pairwise_marginals */
    fill_f64(out, BIG);
    EXPECT("pairwise_marginals: crf NULL", SEGINF_ERR_NULL_ARGUMENT, "`crf`",
           seginf_crf_pairwise_marginals(NULL, x, N, out));
    EXPECT("pairwise_marginals: features NULL", SEGINF_ERR_NULL_ARGUMENT, "`features`",
           seginf_crf_pairwise_marginals(crf, NULL, N, out));
    EXPECT("pairwise_marginals: out NULL", SEGINF_ERR_NULL_ARGUMENT, "`out`",
           seginf_crf_pairwise_marginals(crf, x, N, NULL));
    EXPECT("pairwise_marginals: n = 0", SEGINF_ERR_INVALID_ARGUMENT, "n = 0",
           seginf_crf_pairwise_marginals(crf, x, 0, out));
    EXPECT("pairwise_marginals: NaN feature", SEGINF_ERR_NON_FINITE, "features",
           seginf_crf_pairwise_marginals(crf, nan_features, N, out));
    EXPECT("pairwise_marginals: no labelling allowed", SEGINF_ERR_IMPOSSIBLE_LABELS, NULL,
           seginf_crf_pairwise_marginals(no_path, blocked, 2, out));
    CHECK("pairwise_marginals: out untouched by failures", kept_f64(out, BIG));
    EXPECT("pairwise_marginals: n = 1", SEGINF_OK, NULL,
           seginf_crf_pairwise_marginals(crf, x, 1, out));
    CHECK("pairwise_marginals: n = 1 writes nothing", kept_f64(out, BIG));
    EXPECT("pairwise_marginals: valid", SEGINF_OK, NULL,
           seginf_crf_pairwise_marginals(crf, x, N, out));
    CHECK("pairwise_marginals: forbidden pair has probability 0, nothing past (n-1) C C",
          out[0 * C + 2] == 0.0 && kept_f64(out + (N - 1) * C * C, BIG - (N - 1) * C * C));
}

typedef seginf_status (*segment_fn)(const seginf_crf *, const float *, size_t, const uint32_t *,
                                    size_t, size_t, double *);

/* The four segment functions share their arguments and most of their errors. */
static void check_segment_fn(const char *name, segment_fn fn, const seginf_crf *crf,
                             size_t out_len, int impossible_is_error) {
    const float *x = FEATURES;
    double out[BIG];
    char desc[128];
    const char *out_name = strcmp(name, "segment_gradient") == 0 ? "`grad_out`" : "`out`";

#define SEG(what, want, needle, call)                          \
    do {                                                       \
        snprintf(desc, sizeof desc, "%s: %s", name, (what));   \
        EXPECT(desc, (want), (needle), (call));                \
    } while (0)

    fill_f64(out, BIG);
    SEG("crf NULL", SEGINF_ERR_NULL_ARGUMENT, "`crf`", fn(NULL, x, N, GOLD, 1, 2, out));
    SEG("features NULL", SEGINF_ERR_NULL_ARGUMENT, "`features`",
        fn(crf, NULL, N, GOLD, 1, 2, out));
    SEG("labels NULL", SEGINF_ERR_NULL_ARGUMENT, "`labels`", fn(crf, x, N, NULL, 1, 2, out));
    SEG("out NULL", SEGINF_ERR_NULL_ARGUMENT, out_name, fn(crf, x, N, GOLD, 1, 2, NULL));
    SEG("n = 0", SEGINF_ERR_INVALID_ARGUMENT, "n = 0", fn(crf, x, 0, GOLD, 0, 0, out));
    SEG("label = C", SEGINF_ERR_LABEL_OUT_OF_RANGE, "labels[0]",
        fn(crf, x, N, label_at(GOLD, N, 0, C), 1, 2, out));
    SEG("label = C outside the segment", SEGINF_ERR_LABEL_OUT_OF_RANGE, "labels[3]",
        fn(crf, x, N, label_at(GOLD, N, 3, C + 7), 0, 0, out));
    SEG("first > last", SEGINF_ERR_BAD_SEGMENT, "first = 2 > last = 1",
        fn(crf, x, N, GOLD, 2, 1, out));
    SEG("last = n", SEGINF_ERR_BAD_SEGMENT, "last = 4", fn(crf, x, N, GOLD, 1, N, out));
    SEG("first = last = n", SEGINF_ERR_BAD_SEGMENT, NULL, fn(crf, x, N, GOLD, N, N, out));
    SEG("last = SIZE_MAX", SEGINF_ERR_BAD_SEGMENT, NULL, fn(crf, x, N, GOLD, 0, SIZE_MAX, out));
    SEG("NaN feature", SEGINF_ERR_NON_FINITE, "features",
        fn(crf, features_with(NAN, 2), N, GOLD, 1, 2, out));
    SEG("+inf feature", SEGINF_ERR_NON_FINITE, "features",
        fn(crf, features_with(INFINITY, 6), N, GOLD, 1, 2, out));
    if (impossible_is_error) {
        SEG("impossible gold labels", SEGINF_ERR_IMPOSSIBLE_LABELS, "forbidden",
            fn(crf, x, N, IMPOSSIBLE, 0, 0, out));
    }
    snprintf(desc, sizeof desc, "%s: output untouched by failures", name);
    CHECK(desc, kept_f64(out, BIG));
    SEG("valid segment [1, 2]", SEGINF_OK, NULL, fn(crf, x, N, GOLD, 1, 2, out));
    snprintf(desc, sizeof desc, "%s: writes exactly %zu values", name, out_len);
    CHECK(desc, !kept_f64(out, out_len) && kept_f64(out + out_len, BIG - out_len));
#undef SEG
}

static void check_segments(const seginf_crf *crf) {
    double loss = SENTINEL_F64;
    size_t p = seginf_crf_num_params(crf);

    check_segment_fn("segment_loss", seginf_crf_segment_loss, crf, 1, 0);
    check_segment_fn("segment_marginals", seginf_crf_segment_marginals, crf, 2 * C, 1);
    check_segment_fn("segment_error_vectors", seginf_crf_segment_error_vectors, crf, 2 * C, 1);
    check_segment_fn("segment_gradient", seginf_crf_segment_gradient, crf, p, 1);

    EXPECT("segment_loss: impossible gold labels", SEGINF_OK, NULL,
           seginf_crf_segment_loss(crf, FEATURES, N, IMPOSSIBLE, 2, 3, &loss));
    CHECK("segment_loss: impossible gold labels give +inf", loss == INFINITY);
    EXPECT("segment_loss: whole sequence", SEGINF_OK, NULL,
           seginf_crf_segment_loss(crf, FEATURES, N, GOLD, 0, N - 1, &loss));
    CHECK("segment_loss: whole sequence is finite and positive", isfinite(loss) && loss > 0);
}

static void check_constraints(const seginf_crf *crf) {
    uint8_t trans[C * C], start[C], end[C];
    seginf_crf *out = SENTINEL_CRF;
    const char *with_null[C] = {"O", NULL, "I-X"};
    const char *bad_prefix[C] = {"O", "B-X", "X-X"};
    const char *bioes_only[C] = {"O", "B-X", "E-X"};
    const char *not_utf8[C] = {"O", "B-X", "I-\xff"};
    const char *const *names = NAMES;

    fill_u8(trans, sizeof trans);
    fill_u8(start, sizeof start);
    fill_u8(end, sizeof end);
    EXPECT("constraint_mask: label_names NULL", SEGINF_ERR_NULL_ARGUMENT, "`label_names`",
           seginf_constraint_mask(SEGINF_TAG_SCHEME_BIO, NULL, C, trans, start, end));
    EXPECT("constraint_mask: label_names[1] NULL", SEGINF_ERR_NULL_ARGUMENT, "label_names[1]",
           seginf_constraint_mask(SEGINF_TAG_SCHEME_BIO, with_null, C, trans, start, end));
    EXPECT("constraint_mask: allowed_transitions NULL", SEGINF_ERR_NULL_ARGUMENT,
           "`allowed_transitions`",
           seginf_constraint_mask(SEGINF_TAG_SCHEME_BIO, names, C, NULL, start, end));
    EXPECT("constraint_mask: allowed_start NULL", SEGINF_ERR_NULL_ARGUMENT, "`allowed_start`",
           seginf_constraint_mask(SEGINF_TAG_SCHEME_BIO, names, C, trans, NULL, end));
    EXPECT("constraint_mask: allowed_end NULL", SEGINF_ERR_NULL_ARGUMENT, "`allowed_end`",
           seginf_constraint_mask(SEGINF_TAG_SCHEME_BIO, names, C, trans, start, NULL));
    EXPECT("constraint_mask: num_labels = 0", SEGINF_ERR_INVALID_ARGUMENT, NULL,
           seginf_constraint_mask(SEGINF_TAG_SCHEME_BIO, names, 0, trans, start, end));
    EXPECT("constraint_mask: scheme 3 unknown", SEGINF_ERR_INVALID_ARGUMENT, "seginf_tag_scheme",
           seginf_constraint_mask(3, names, C, trans, start, end));
    EXPECT("constraint_mask: scheme -1 unknown", SEGINF_ERR_INVALID_ARGUMENT, "seginf_tag_scheme",
           seginf_constraint_mask(-1, names, C, trans, start, end));
    EXPECT("constraint_mask: \"X-X\" is not a tag", SEGINF_ERR_INVALID_ARGUMENT, "X-X",
           seginf_constraint_mask(SEGINF_TAG_SCHEME_BIO, bad_prefix, C, trans, start, end));
    EXPECT("constraint_mask: \"E-X\" is not a BIO tag", SEGINF_ERR_INVALID_ARGUMENT, "E-X",
           seginf_constraint_mask(SEGINF_TAG_SCHEME_BIO, bioes_only, C, trans, start, end));
    EXPECT("constraint_mask: non-UTF-8 name", SEGINF_ERR_INVALID_ARGUMENT, "UTF-8",
           seginf_constraint_mask(SEGINF_TAG_SCHEME_BIO, not_utf8, C, trans, start, end));
    CHECK("constraint_mask: outputs untouched by failures",
          kept_u8(trans, sizeof trans) && kept_u8(start, sizeof start) && kept_u8(end, sizeof end));
    EXPECT("constraint_mask: \"E-X\" is a BIOES tag", SEGINF_OK, NULL,
           seginf_constraint_mask(SEGINF_TAG_SCHEME_BIOES, bioes_only, C, trans, start, end));
    EXPECT("constraint_mask: BIO", SEGINF_OK, NULL,
           seginf_constraint_mask(SEGINF_TAG_SCHEME_BIO, names, C, trans, start, end));
    CHECK("constraint_mask: BIO forbids O -> I-X and starting with I-X, allows B-X -> I-X",
          trans[0 * C + 2] == 0 && trans[1 * C + 2] == 1 && start[2] == 0 && start[0] == 1 &&
              end[2] == 1);

    EXPECT("with_constraints: crf NULL", SEGINF_ERR_NULL_ARGUMENT, "`crf`",
           seginf_crf_with_constraints(NULL, SEGINF_TAG_SCHEME_BIO, names, C, &out));
    EXPECT("with_constraints: label_names NULL", SEGINF_ERR_NULL_ARGUMENT, "`label_names`",
           seginf_crf_with_constraints(crf, SEGINF_TAG_SCHEME_BIO, NULL, C, &out));
    EXPECT("with_constraints: label_names[1] NULL", SEGINF_ERR_NULL_ARGUMENT, "label_names[1]",
           seginf_crf_with_constraints(crf, SEGINF_TAG_SCHEME_BIO, with_null, C, &out));
    EXPECT("with_constraints: out NULL", SEGINF_ERR_NULL_ARGUMENT, "`out`",
           seginf_crf_with_constraints(crf, SEGINF_TAG_SCHEME_BIO, names, C, NULL));
    EXPECT("with_constraints: scheme 99 unknown", SEGINF_ERR_INVALID_ARGUMENT, "99",
           seginf_crf_with_constraints(crf, 99, names, C, &out));
    EXPECT("with_constraints: num_labels = C - 1", SEGINF_ERR_DIMENSION_MISMATCH, NULL,
           seginf_crf_with_constraints(crf, SEGINF_TAG_SCHEME_BIO, names, C - 1, &out));
    EXPECT("with_constraints: num_labels = 0", SEGINF_ERR_INVALID_ARGUMENT, NULL,
           seginf_crf_with_constraints(crf, SEGINF_TAG_SCHEME_BIO, names, 0, &out));
    EXPECT("with_constraints: \"X-X\" is not a tag", SEGINF_ERR_INVALID_ARGUMENT, "X-X",
           seginf_crf_with_constraints(crf, SEGINF_TAG_SCHEME_BIO, bad_prefix, C, &out));
    CHECK("with_constraints: *out untouched by failures", out == SENTINEL_CRF);
    EXPECT("with_constraints: BIO", SEGINF_OK, NULL,
           seginf_crf_with_constraints(crf, SEGINF_TAG_SCHEME_BIO, names, C, &out));
    CHECK("with_constraints: *out set on success", out != SENTINEL_CRF && out != NULL);
    seginf_crf_free(out == SENTINEL_CRF ? NULL : out);
}

static void check_load_options(void) {
    seginf_load_options *opts = SENTINEL_OPTS;

    EXPECT("load_options_new: out NULL", SEGINF_ERR_NULL_ARGUMENT, "`out`",
           seginf_load_options_new(NULL));
    EXPECT("load_options_new", SEGINF_OK, NULL, seginf_load_options_new(&opts));
    if (opts == SENTINEL_OPTS || opts == NULL) {
        CHECK("load_options_new: *out set", 0);
        return;
    }
    EXPECT("set_tensor_name: opts NULL", SEGINF_ERR_NULL_ARGUMENT, "`opts`",
           seginf_load_options_set_tensor_name(NULL, SEGINF_PARAM_WEIGHT, "w"));
    EXPECT("set_tensor_name: name NULL", SEGINF_ERR_NULL_ARGUMENT, "`name`",
           seginf_load_options_set_tensor_name(opts, SEGINF_PARAM_WEIGHT, NULL));
    EXPECT("set_tensor_name: param 5 unknown", SEGINF_ERR_INVALID_ARGUMENT, "seginf_param",
           seginf_load_options_set_tensor_name(opts, 5, "w"));
    EXPECT("set_tensor_name: \"\" for weight", SEGINF_ERR_INVALID_ARGUMENT, "required",
           seginf_load_options_set_tensor_name(opts, SEGINF_PARAM_WEIGHT, ""));
    EXPECT("set_tensor_name: \"\" for transitions", SEGINF_ERR_INVALID_ARGUMENT, "required",
           seginf_load_options_set_tensor_name(opts, SEGINF_PARAM_TRANSITIONS, ""));
    EXPECT("set_tensor_name: non-UTF-8 name", SEGINF_ERR_INVALID_ARGUMENT, "UTF-8",
           seginf_load_options_set_tensor_name(opts, SEGINF_PARAM_BIAS, "b\xff"));
    EXPECT("set_tensor_name: \"\" for bias (never load)", SEGINF_OK, NULL,
           seginf_load_options_set_tensor_name(opts, SEGINF_PARAM_BIAS, ""));
    EXPECT("set_transitions_to_from: opts NULL", SEGINF_ERR_NULL_ARGUMENT, "`opts`",
           seginf_load_options_set_transitions_to_from(NULL, 1));
    EXPECT("set_transitions_to_from", SEGINF_OK, NULL,
           seginf_load_options_set_transitions_to_from(opts, 1));
    seginf_load_options_free(opts);
}

static void check_load_safetensors(const char *dir) {
    seginf_crf *out = SENTINEL_CRF;
    seginf_load_options *opts = NULL;
    unsigned char data[4 * 16];
    const float w[2] = {0.5f, -0.25f}, a[4] = {0.0f, 0.25f, -INFINITY, 0.5f};
    const float nan_w[2] = {0.5f, NAN};
    char path[4096];

    /* weight [2, 1] then transitions [2, 2], F32. */
    le_f32(data, w, 2);
    le_f32(data + 8, a, 4);

    snprintf(path, sizeof path, "%s", scratch(dir, "does_not_exist.safetensors"));
    remove(path);
    EXPECT("load_safetensors: path NULL", SEGINF_ERR_NULL_ARGUMENT, "`path`",
           seginf_crf_load_safetensors(NULL, NULL, &out));
    EXPECT("load_safetensors: out NULL", SEGINF_ERR_NULL_ARGUMENT, "`out`",
           seginf_crf_load_safetensors(path, NULL, NULL));
    EXPECT("load_safetensors: missing file", SEGINF_ERR_IO, "does_not_exist.safetensors",
           seginf_crf_load_safetensors(path, NULL, &out));
    EXPECT("load_safetensors: non-UTF-8 path", SEGINF_ERR_INVALID_ARGUMENT, "UTF-8",
           seginf_crf_load_safetensors("model\xff.safetensors", NULL, &out));

    snprintf(path, sizeof path, "%s", scratch(dir, "garbage.safetensors"));
    if (!write_bytes(path, "this is not a safetensors file, only text", 41)) {
        CHECK("write garbage.safetensors", 0);
    }
    EXPECT("load_safetensors: garbage file", SEGINF_ERR_FORMAT, "garbage.safetensors",
           seginf_crf_load_safetensors(path, NULL, &out));

    snprintf(path, sizeof path, "%s", scratch(dir, "empty.safetensors"));
    write_bytes(path, "", 0);
    EXPECT("load_safetensors: empty file", SEGINF_ERR_FORMAT, NULL,
           seginf_crf_load_safetensors(path, NULL, &out));

    snprintf(path, sizeof path, "%s", scratch(dir, "no_transitions.safetensors"));
    write_safetensors(path, "{" TENSOR("weight", "F32", "2,1", "0", "8") "}", data, 8);
    EXPECT("load_safetensors: no transitions tensor", SEGINF_ERR_FORMAT, "\"transitions\"",
           seginf_crf_load_safetensors(path, NULL, &out));

    snprintf(path, sizeof path, "%s", scratch(dir, "int_weights.safetensors"));
    write_safetensors(path, WEIGHT_AND_TRANSITIONS("I32", "2,1"), data, 24);
    EXPECT("load_safetensors: I32 weights", SEGINF_ERR_UNSUPPORTED, "I32",
           seginf_crf_load_safetensors(path, NULL, &out));

    snprintf(path, sizeof path, "%s", scratch(dir, "shape_mismatch.safetensors"));
    write_safetensors(path, WEIGHT_AND_TRANSITIONS("F32", "1,2"), data, 24);
    EXPECT("load_safetensors: transitions 2 x 2 for 1 label", SEGINF_ERR_DIMENSION_MISMATCH,
           "transitions", seginf_crf_load_safetensors(path, NULL, &out));

    snprintf(path, sizeof path, "%s", scratch(dir, "weight_1d.safetensors"));
    write_safetensors(path, WEIGHT_AND_TRANSITIONS("F32", "2"), data, 24);
    EXPECT("load_safetensors: 1-D weight", SEGINF_ERR_FORMAT, "weight",
           seginf_crf_load_safetensors(path, NULL, &out));

    snprintf(path, sizeof path, "%s", scratch(dir, "nan_weight.safetensors"));
    le_f32(data, nan_w, 2);
    write_safetensors(path, WEIGHT_AND_TRANSITIONS("F32", "2,1"), data, 24);
    EXPECT("load_safetensors: NaN weight", SEGINF_ERR_NON_FINITE, "weights",
           seginf_crf_load_safetensors(path, NULL, &out));
    le_f32(data, w, 2);
    CHECK("load_safetensors: *out untouched by failures", out == SENTINEL_CRF);

    snprintf(path, sizeof path, "%s", scratch(dir, "valid.safetensors"));
    write_safetensors(path, WEIGHT_AND_TRANSITIONS("F32", "2,1"), data, 24);
    EXPECT("load_safetensors: valid file, default options", SEGINF_OK, NULL,
           seginf_crf_load_safetensors(path, NULL, &out));
    CHECK("load_safetensors: 2 labels, 1 feature, 6 parameters",
          out != SENTINEL_CRF && seginf_crf_num_labels(out) == 2 &&
              seginf_crf_feature_dim(out) == 1 && seginf_crf_num_params(out) == 6);
    seginf_crf_free(out == SENTINEL_CRF ? NULL : out);
    out = SENTINEL_CRF;

    if (seginf_load_options_new(&opts) != SEGINF_OK) {
        CHECK("load_options_new", 0);
        return;
    }
    seginf_load_options_set_tensor_name(opts, SEGINF_PARAM_WEIGHT, "emissions");
    EXPECT("load_safetensors: renamed weight tensor is missing", SEGINF_ERR_FORMAT, "emissions",
           seginf_crf_load_safetensors(path, opts, &out));
    CHECK("load_safetensors: *out untouched", out == SENTINEL_CRF);
    seginf_load_options_free(opts);
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : ".";
    seginf_crf *crf = NULL, *no_bias = NULL, *no_path = NULL;
    const float blocked_w[2] = {1.0f, -1.0f};
    const float blocked_a[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};

    if (seginf_crf_new(C, D, WEIGHTS, BIAS, TRANSITIONS, START, END, &crf) != SEGINF_OK ||
        seginf_crf_new(C, D, WEIGHTS, NULL, TRANSITIONS, NULL, NULL, &no_bias) != SEGINF_OK ||
        /* Every transition forbidden: no labelling of length >= 2 exists. */
        seginf_crf_new(2, 1, blocked_w, NULL, blocked_a, NULL, NULL, &no_path) != SEGINF_OK) {
        fprintf(stderr, "null_args: cannot build the fixtures\n");
        return 2;
    }
    g_crf = crf;

    check_version_and_names();
    check_last_error_message();
    check_crf_new();
    check_free_and_getters(crf);
    check_param_offset_and_params(crf, no_bias);
    check_inference(crf, no_path);
    check_segments(crf);
    check_constraints(crf);
    check_load_options();
    check_load_safetensors(dir);

    seginf_crf_free(no_path);
    seginf_crf_free(no_bias);
    seginf_crf_free(crf);
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
