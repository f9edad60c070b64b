/*
 * index_null_args.c -- every seginf index and query entry point fed bad input: NULL for each
 * pointer in turn, n = 0, lengths that disagree with the index, labels >= C, first > last,
 * last >= n, NaN/inf features (training and test), k_capacity = 0, unknown enum values, bad
 * Hessian damping, option mixes that cannot run, out-of-range batch segments, an empty build,
 * impossible gold labels, a cancelled build, and missing, garbage, truncated, corrupted and
 * wrong-model index files (DESIGN.md section 4: "NULL pointers and bad lengths are errors, not
 * undefined behaviour"; "outputs are written only on success").
 *
 * For each failing call it checks the exact status, that seginf_last_error_message() gives a
 * fresh, non-empty message (and, where useful, that it names the argument), and that the output
 * buffers and handles, pre-filled with sentinels, are untouched; for the builder, that nothing
 * was added. Run under AddressSanitizer + UBSan by tests/c_abi.rs, so a crash, an out-of-bounds
 * access or a leak also fails. null_args.c does the same for the CRF entry points.
 *
 * Prints one line per check and a final "N passed, M failed"; exits nonzero on any failure.
 * Usage: index_null_args [scratch-dir]   (index files are written there; default ".")
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

#define SENTINEL_U64 0xFEEDFACECAFEBEEFull

static void fill_hits(seginf_hit *v, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) {
        v[i].doc_id = SENTINEL_U64;
        v[i].position = SENTINEL_U32;
        v[i].label = SENTINEL_U32;
        v[i].score = SENTINEL_F64;
    }
}
static int kept_hits(const seginf_hit *v, size_t n) {
    size_t i;
    for (i = 0; i < n; i++)
        if (v[i].doc_id != SENTINEL_U64 || v[i].position != SENTINEL_U32 ||
            v[i].label != SENTINEL_U32 || v[i].score != SENTINEL_F64)
            return 0;
    return 1;
}

/* ---- fixtures -------------------------------------------------------------------------- */

#define C 3 /* O, B-X, I-X */
#define D 2
#define N 4         /* tokens of the test sequence (and of training doc 7) */
#define NT 9        /* training tokens in the fixture index: docs 7, 8, 9 of 4, 3, 2 tokens */
#define NS 3        /* training sequences */
#define K 4         /* hit capacity used below */
#define BIG 64      /* room for any output buffer below */

static const float WEIGHTS[C * D] = {0.5f, -0.25f, 0.25f, 0.5f, -0.5f, 0.25f};
static const float OTHER_WEIGHTS[C * D] = {0.5f, -0.25f, 0.25f, 0.5f, -0.5f, 0.375f};
static const float BIAS[C] = {0.125f, -0.25f, 0.0625f};
/* O -> I-X is forbidden. */
static const float TRANSITIONS[C * C] = {0.25f, 0.5f, -INFINITY, -0.125f, 0.0f,
                                         0.75f, 0.375f, -0.5f,    0.25f};
static const float START[C] = {0.125f, 0.25f, -0.5f};
static const float END[C] = {0.0f, -0.25f, 0.125f};

/* The training set, back to back: doc 7 (4 tokens), doc 8 (3), doc 9 (2). */
static const uint64_t TRAIN_DOCS[NS] = {7, 8, 9};
static const size_t TRAIN_LENGTHS[NS] = {4, 3, 2};
static const float TRAIN_X[NT * D] = {1.0f,  -0.5f, 0.25f, 0.75f, -1.0f, 0.5f,  0.0f, 2.0f,
                                      0.5f,  0.5f,  -0.25f, 1.0f, 1.5f,  -1.0f, 0.75f, 0.25f,
                                      -0.5f, 1.25f};
static const uint32_t TRAIN_Y[NT] = {1, 2, 0, 0, 0, 1, 2, 1, 1};

/* The test sequence: the first training document. */
static const float *const FEATURES = TRAIN_X;
static const uint32_t GOLD[N] = {1, 2, 0, 0};
/* Uses O -> I-X at positions 0..1: impossible under the -inf transition. */
static const uint32_t IMPOSSIBLE[N] = {0, 2, 0, 0};

/* ---- progress callbacks ----------------------------------------------------------------- */

static int32_t keep_going(uint64_t done, uint64_t total, void *user) {
    (void)done;
    (void)total;
    (void)user;
    return 0;
}

static int32_t stop(uint64_t done, uint64_t total, void *user) {
    (void)done;
    (void)total;
    ++*(int *)user;
    return 1;
}

/* ---- the checks, one function per group of entry points ---------------------------------- */

static void check_index_options(void) {
    seginf_index_options *opts = SENTINEL(seginf_index_options);

    seginf_index_options_free(NULL);
    CHECK("index_options_free(NULL) is a no-op", 1);
    EXPECT("index_options_new: out NULL", SEGINF_ERR_NULL_ARGUMENT, "`out`",
           seginf_index_options_new(NULL));
    CHECK("index_options_new: nothing made", opts == SENTINEL(seginf_index_options));
    EXPECT("index_options_new", SEGINF_OK, NULL, seginf_index_options_new(&opts));
    if (opts == SENTINEL(seginf_index_options) || opts == NULL) {
        CHECK("index_options_new: *out set", 0);
        return;
    }
    EXPECT("set_storage: opts NULL", SEGINF_ERR_NULL_ARGUMENT, "`opts`",
           seginf_index_options_set_storage(NULL, SEGINF_STORAGE_F16));
    EXPECT("set_storage: 3 unknown", SEGINF_ERR_INVALID_ARGUMENT, "seginf_storage",
           seginf_index_options_set_storage(opts, 3));
    EXPECT("set_storage: -1 unknown", SEGINF_ERR_INVALID_ARGUMENT, "seginf_storage",
           seginf_index_options_set_storage(opts, -1));
    EXPECT("set_storage: INT32_MIN unknown", SEGINF_ERR_INVALID_ARGUMENT, "seginf_storage",
           seginf_index_options_set_storage(opts, INT32_MIN));
    EXPECT("set_storage: INT8", SEGINF_OK, NULL,
           seginf_index_options_set_storage(opts, SEGINF_STORAGE_INT8));
    EXPECT("set_expected_tokens: opts NULL", SEGINF_ERR_NULL_ARGUMENT, "`opts`",
           seginf_index_options_set_expected_tokens(NULL, 10));
    EXPECT("set_expected_tokens: UINT64_MAX", SEGINF_OK, NULL,
           seginf_index_options_set_expected_tokens(opts, UINT64_MAX));
    EXPECT("set_progress: opts NULL", SEGINF_ERR_NULL_ARGUMENT, "`opts`",
           seginf_index_options_set_progress(NULL, keep_going, NULL));
    EXPECT("set_progress: a callback", SEGINF_OK, NULL,
           seginf_index_options_set_progress(opts, keep_going, NULL));
    EXPECT("set_progress: NULL callback removes it", SEGINF_OK, NULL,
           seginf_index_options_set_progress(opts, NULL, NULL));
    seginf_index_options_free(opts);
}

/* A fresh builder with default options (f32, no callback); NULL on failure. */
static seginf_index_builder *new_builder(const seginf_crf *crf) {
    seginf_index_builder *b = NULL;
    if (seginf_index_builder_new(crf, NULL, &b) != SEGINF_OK) {
        CHECK("index_builder_new (fixture)", 0);
        return NULL;
    }
    return b;
}

static void check_builder_new_and_finish(const seginf_crf *crf) {
    seginf_index_builder *b = SENTINEL(seginf_index_builder);
    seginf_index *index = SENTINEL(seginf_index);

    seginf_index_builder_free(NULL);
    CHECK("index_builder_free(NULL) is a no-op", 1);
    CHECK("index_builder_num_tokens(NULL) = 0", seginf_index_builder_num_tokens(NULL) == 0);
    EXPECT("builder_new: crf NULL", SEGINF_ERR_NULL_ARGUMENT, "`crf`",
           seginf_index_builder_new(NULL, NULL, &b));
    EXPECT("builder_new: out NULL", SEGINF_ERR_NULL_ARGUMENT, "`out`",
           seginf_index_builder_new(crf, NULL, NULL));
    CHECK("builder_new: *out untouched by failures", b == SENTINEL(seginf_index_builder));
    EXPECT("builder_new: opts NULL means defaults", SEGINF_OK, NULL,
           seginf_index_builder_new(crf, NULL, &b));
    if (b == SENTINEL(seginf_index_builder) || b == NULL) {
        CHECK("builder_new: *out set", 0);
        return;
    }
    CHECK("builder_new: a new builder has 0 tokens", seginf_index_builder_num_tokens(b) == 0);

    EXPECT("builder_finish: builder NULL", SEGINF_ERR_NULL_ARGUMENT, "`builder`",
           seginf_index_builder_finish(NULL, &index));
    EXPECT("builder_finish: out NULL (builder not consumed)", SEGINF_ERR_NULL_ARGUMENT, "`out`",
           seginf_index_builder_finish(b, NULL));
    CHECK("builder_finish: the builder survives a NULL out",
          seginf_index_builder_num_tokens(b) == 0);
    /* Consumes (frees) the builder although it fails; ASan reports a leak or a double free. */
    EXPECT("builder_finish: no tokens added", SEGINF_ERR_INVALID_ARGUMENT, "no training tokens",
           seginf_index_builder_finish(b, &index));
    CHECK("builder_finish: *out untouched by failures", index == SENTINEL(seginf_index));
}

static void check_builder_add(const seginf_crf *crf) {
    seginf_index_builder *b = new_builder(crf);
    seginf_index_options *opts = NULL;
    seginf_index_builder *cancelled = NULL;
    const float *x = FEATURES;
    unsigned char raw[sizeof(float) * (N * D + 1)];
    const float *misaligned = (const float *)(const void *)(raw + 1);
    int stops = 0;

    if (b == NULL) return;
    memcpy(raw + 1, FEATURES, sizeof(float) * N * D);

    EXPECT("builder_add: builder NULL", SEGINF_ERR_NULL_ARGUMENT, "`builder`",
           seginf_index_builder_add(NULL, 7, x, N, GOLD));
    EXPECT("builder_add: features NULL", SEGINF_ERR_NULL_ARGUMENT, "`features`",
           seginf_index_builder_add(b, 7, NULL, N, GOLD));
    EXPECT("builder_add: labels NULL", SEGINF_ERR_NULL_ARGUMENT, "`labels`",
           seginf_index_builder_add(b, 7, x, N, NULL));
    EXPECT("builder_add: n = 0", SEGINF_ERR_INVALID_ARGUMENT, "n = 0",
           seginf_index_builder_add(b, 7, x, 0, GOLD));
    EXPECT("builder_add: n x d overflows", SEGINF_ERR_INVALID_ARGUMENT, NULL,
           seginf_index_builder_add(b, 7, x, SIZE_MAX, GOLD));
    EXPECT("builder_add: misaligned features", SEGINF_ERR_INVALID_ARGUMENT, "aligned",
           seginf_index_builder_add(b, 7, misaligned, N, GOLD));
    EXPECT("builder_add: label = C", SEGINF_ERR_LABEL_OUT_OF_RANGE, "labels[2]",
           seginf_index_builder_add(b, 7, x, N, label_at(GOLD, N, 2, C)));
    EXPECT("builder_add: label = UINT32_MAX", SEGINF_ERR_LABEL_OUT_OF_RANGE, "doc 7",
           seginf_index_builder_add(b, 7, x, N, label_at(GOLD, N, 3, UINT32_MAX)));
    EXPECT("builder_add: NaN feature", SEGINF_ERR_NON_FINITE, "features[1][1]",
           seginf_index_builder_add(b, 7, with_value(x, N * D, 3, NAN), N, GOLD));
    EXPECT("builder_add: +inf feature", SEGINF_ERR_NON_FINITE, "doc 7",
           seginf_index_builder_add(b, 7, with_value(x, N * D, 7, INFINITY), N, GOLD));
    EXPECT("builder_add: -inf feature", SEGINF_ERR_NON_FINITE, "features",
           seginf_index_builder_add(b, 7, with_value(x, N * D, 0, -INFINITY), N, GOLD));
    EXPECT("builder_add: impossible gold labels", SEGINF_ERR_IMPOSSIBLE_LABELS, "doc 7",
           seginf_index_builder_add(b, 7, x, N, IMPOSSIBLE));
    CHECK("builder_add: nothing added by failures", seginf_index_builder_num_tokens(b) == 0);
    EXPECT("builder_add: valid", SEGINF_OK, NULL, seginf_index_builder_add(b, 7, x, N, GOLD));
    CHECK("builder_add: n tokens added", seginf_index_builder_num_tokens(b) == N);
    EXPECT("builder_add: impossible gold labels after a valid sequence",
           SEGINF_ERR_IMPOSSIBLE_LABELS, "forbidden",
           seginf_index_builder_add(b, 8, x, N, IMPOSSIBLE));
    CHECK("builder_add: num_tokens unchanged by impossible labels",
          seginf_index_builder_num_tokens(b) == N);
    seginf_index_builder_free(b);

    /* A progress callback that stops the build: nothing of that call is added. */
    if (seginf_index_options_new(&opts) != SEGINF_OK ||
        seginf_index_options_set_progress(opts, stop, &stops) != SEGINF_OK ||
        seginf_index_builder_new(crf, opts, &cancelled) != SEGINF_OK) {
        CHECK("cancelling builder (fixture)", 0);
        seginf_index_options_free(opts);
        return;
    }
    seginf_index_options_free(opts);
    EXPECT("builder_add: progress callback cancels", SEGINF_ERR_CANCELLED, "progress callback",
           seginf_index_builder_add(cancelled, 7, x, N, GOLD));
    CHECK("builder_add: cancelled add adds nothing, callback called once",
          seginf_index_builder_num_tokens(cancelled) == 0 && stops == 1);
    EXPECT("builder_add_batch: progress callback cancels", SEGINF_ERR_CANCELLED, NULL,
           seginf_index_builder_add_batch(cancelled, TRAIN_DOCS, TRAIN_X, TRAIN_Y, TRAIN_LENGTHS,
                                          NS));
    CHECK("builder_add_batch: cancelled batch adds nothing, stops at the first report",
          seginf_index_builder_num_tokens(cancelled) == 0 && stops == 2);
    seginf_index_builder_free(cancelled);
}

static void check_builder_add_batch(const seginf_crf *crf) {
    seginf_index_builder *b = new_builder(crf);
    const size_t overflow[2] = {SIZE_MAX, 2};
    const size_t with_empty[NS] = {4, 0, 5};
    float bad_x[NT * D];
    uint32_t bad_y[NT];

    if (b == NULL) return;
#define BATCH(docs, x, y, lengths, count) \
    seginf_index_builder_add_batch(b, (docs), (x), (y), (lengths), (count))
    EXPECT("builder_add_batch: builder NULL", SEGINF_ERR_NULL_ARGUMENT, "`builder`",
           seginf_index_builder_add_batch(NULL, TRAIN_DOCS, TRAIN_X, TRAIN_Y, TRAIN_LENGTHS,
                                          NS));
    EXPECT("builder_add_batch: doc_ids NULL", SEGINF_ERR_NULL_ARGUMENT, "`doc_ids`",
           BATCH(NULL, TRAIN_X, TRAIN_Y, TRAIN_LENGTHS, NS));
    EXPECT("builder_add_batch: features NULL", SEGINF_ERR_NULL_ARGUMENT, "`features`",
           BATCH(TRAIN_DOCS, NULL, TRAIN_Y, TRAIN_LENGTHS, NS));
    EXPECT("builder_add_batch: labels NULL", SEGINF_ERR_NULL_ARGUMENT, "`labels`",
           BATCH(TRAIN_DOCS, TRAIN_X, NULL, TRAIN_LENGTHS, NS));
    EXPECT("builder_add_batch: seq_lengths NULL", SEGINF_ERR_NULL_ARGUMENT, "`seq_lengths`",
           BATCH(TRAIN_DOCS, TRAIN_X, TRAIN_Y, NULL, NS));
    EXPECT("builder_add_batch: seq_lengths add up past SIZE_MAX", SEGINF_ERR_INVALID_ARGUMENT,
           "SIZE_MAX", BATCH(TRAIN_DOCS, TRAIN_X, TRAIN_Y, overflow, 2));
    EXPECT("builder_add_batch: a sequence of length 0 (after a valid one)",
           SEGINF_ERR_INVALID_ARGUMENT, "n = 0",
           BATCH(TRAIN_DOCS, TRAIN_X, TRAIN_Y, with_empty, NS));
    EXPECT("builder_add_batch: label = C in the last sequence", SEGINF_ERR_LABEL_OUT_OF_RANGE,
           "doc 9", BATCH(TRAIN_DOCS, TRAIN_X, label_at(TRAIN_Y, NT, NT - 1, C), TRAIN_LENGTHS,
                          NS));
    memcpy(bad_x, TRAIN_X, sizeof bad_x);
    bad_x[5 * D + 1] = NAN; /* doc 8, token 1 */
    EXPECT("builder_add_batch: NaN feature in the second sequence", SEGINF_ERR_NON_FINITE,
           "doc 8", BATCH(TRAIN_DOCS, bad_x, TRAIN_Y, TRAIN_LENGTHS, NS));
    bad_x[5 * D + 1] = INFINITY;
    EXPECT("builder_add_batch: +inf feature in the second sequence", SEGINF_ERR_NON_FINITE,
           "doc 8", BATCH(TRAIN_DOCS, bad_x, TRAIN_Y, TRAIN_LENGTHS, NS));
    memcpy(bad_y, TRAIN_Y, sizeof bad_y);
    bad_y[4] = 0;
    bad_y[5] = 2; /* doc 8 starts O, I-X: impossible */
    EXPECT("builder_add_batch: impossible gold labels in the second sequence",
           SEGINF_ERR_IMPOSSIBLE_LABELS, "doc 8",
           BATCH(TRAIN_DOCS, TRAIN_X, bad_y, TRAIN_LENGTHS, NS));
    CHECK("builder_add_batch: nothing of a failed batch is added",
          seginf_index_builder_num_tokens(b) == 0);
    EXPECT("builder_add_batch: num_seqs = 0 is a no-op", SEGINF_OK, NULL,
           BATCH(TRAIN_DOCS, TRAIN_X, TRAIN_Y, TRAIN_LENGTHS, 0));
    CHECK("builder_add_batch: num_seqs = 0 adds nothing", seginf_index_builder_num_tokens(b) == 0);
    EXPECT("builder_add_batch: valid", SEGINF_OK, NULL,
           BATCH(TRAIN_DOCS, TRAIN_X, TRAIN_Y, TRAIN_LENGTHS, NS));
    CHECK("builder_add_batch: all tokens added", seginf_index_builder_num_tokens(b) == NT);
    EXPECT("builder_add_batch: impossible labels after a valid batch",
           SEGINF_ERR_IMPOSSIBLE_LABELS, NULL,
           BATCH(TRAIN_DOCS, TRAIN_X, bad_y, TRAIN_LENGTHS, NS));
    CHECK("builder_add_batch: num_tokens unchanged by the failed batch",
          seginf_index_builder_num_tokens(b) == NT);
#undef BATCH
    seginf_index_builder_free(b);
}

/* The fixture index over TRAIN_*, f32; NULL on failure. */
static seginf_index *build_index(const seginf_crf *crf) {
    seginf_index_builder *b = new_builder(crf);
    seginf_index *index = NULL;
    if (b == NULL) return NULL;
    if (seginf_index_builder_add_batch(b, TRAIN_DOCS, TRAIN_X, TRAIN_Y, TRAIN_LENGTHS, NS) !=
        SEGINF_OK) {
        seginf_index_builder_free(b);
        CHECK("build the fixture index", 0);
        return NULL;
    }
    if (seginf_index_builder_finish(b, &index) != SEGINF_OK) {
        CHECK("finish the fixture index", 0);
        return NULL;
    }
    return index;
}

static void check_index_getters(const seginf_index *index) {
    double out[BIG];
    uint64_t doc = SENTINEL_U64;
    uint32_t position = SENTINEL_U32, label = SENTINEL_U32;
    unsigned char raw[sizeof(uint32_t) * 2];
    uint32_t *misaligned = (uint32_t *)(void *)(raw + 1);

    seginf_index_free(NULL);
    CHECK("index_free(NULL) is a no-op", 1);
    CHECK("index_num_tokens(NULL) = 0", seginf_index_num_tokens(NULL) == 0);
    CHECK("index_num_sequences(NULL) = 0", seginf_index_num_sequences(NULL) == 0);
    CHECK("index_storage(NULL) = -1", seginf_index_storage(NULL) == -1);
    CHECK("index_ranking_copy_bytes(NULL) = 0", seginf_index_ranking_copy_bytes(NULL) == 0);
    CHECK("index: NT tokens, NS sequences, f32",
          seginf_index_num_tokens(index) == NT && seginf_index_num_sequences(index) == NS &&
              seginf_index_storage(index) == SEGINF_STORAGE_F32);

    fill_f64(out, BIG);
    EXPECT("token_stats: index NULL", SEGINF_ERR_NULL_ARGUMENT, "`index`",
           seginf_index_token_stats(NULL, SEGINF_TOKEN_LOSS, out, NT));
    EXPECT("token_stats: out NULL", SEGINF_ERR_NULL_ARGUMENT, "`out`",
           seginf_index_token_stats(index, SEGINF_TOKEN_LOSS, NULL, NT));
    EXPECT("token_stats: stat 3 unknown", SEGINF_ERR_INVALID_ARGUMENT, "seginf_token_stat",
           seginf_index_token_stats(index, 3, out, NT));
    EXPECT("token_stats: stat -1 unknown", SEGINF_ERR_INVALID_ARGUMENT, "seginf_token_stat",
           seginf_index_token_stats(index, -1, out, NT));
    EXPECT("token_stats: len = N - 1", SEGINF_ERR_DIMENSION_MISMATCH, "len = 8",
           seginf_index_token_stats(index, SEGINF_TOKEN_ENTROPY, out, NT - 1));
    EXPECT("token_stats: len = N + 1", SEGINF_ERR_DIMENSION_MISMATCH, "len = 10",
           seginf_index_token_stats(index, SEGINF_TOKEN_GRAD_NORM, out, NT + 1));
    EXPECT("token_stats: len = 0", SEGINF_ERR_DIMENSION_MISMATCH, NULL,
           seginf_index_token_stats(index, SEGINF_TOKEN_LOSS, out, 0));
    CHECK("token_stats: out untouched by failures", kept_f64(out, BIG));
    EXPECT("token_stats: grad norms", SEGINF_OK, NULL,
           seginf_index_token_stats(index, SEGINF_TOKEN_GRAD_NORM, out, NT));
    CHECK("token_stats: writes exactly N values, all >= 0",
          out[0] >= 0 && out[NT - 1] >= 0 && kept_f64(out + NT, BIG - NT));

    EXPECT("index_token: index NULL", SEGINF_ERR_NULL_ARGUMENT, "`index`",
           seginf_index_token(NULL, 0, &doc, &position, &label));
    EXPECT("index_token: k = N", SEGINF_ERR_INVALID_ARGUMENT, "token 9",
           seginf_index_token(index, NT, &doc, &position, &label));
    EXPECT("index_token: k = SIZE_MAX", SEGINF_ERR_INVALID_ARGUMENT, NULL,
           seginf_index_token(index, SIZE_MAX, &doc, &position, &label));
    EXPECT("index_token: misaligned label", SEGINF_ERR_INVALID_ARGUMENT, "`label`",
           seginf_index_token(index, 1, &doc, &position, misaligned));
    CHECK("index_token: outputs untouched by failures (no partial success)",
          doc == SENTINEL_U64 && position == SENTINEL_U32 && label == SENTINEL_U32);
    EXPECT("index_token: every output NULL", SEGINF_OK, NULL,
           seginf_index_token(index, 0, NULL, NULL, NULL));
    EXPECT("index_token: last token", SEGINF_OK, NULL,
           seginf_index_token(index, NT - 1, &doc, &position, &label));
    CHECK("index_token: last token is doc 9, position 1, label 1",
          doc == 9 && position == 1 && label == 1);
}

static void check_save_and_open(const char *dir, const seginf_crf *crf,
                                const seginf_crf *other_crf, const seginf_index *index) {
    seginf_index *out = SENTINEL(seginf_index);
    char path[4096], bad[4096];
    unsigned char *bytes;
    size_t len = 0, header, at;

    snprintf(path, sizeof path, "%s", scratch(dir, "valid.seginf"));
    EXPECT("index_save: index NULL", SEGINF_ERR_NULL_ARGUMENT, "`index`",
           seginf_index_save(NULL, path));
    EXPECT("index_save: path NULL", SEGINF_ERR_NULL_ARGUMENT, "`path`",
           seginf_index_save(index, NULL));
    EXPECT("index_save: non-UTF-8 path", SEGINF_ERR_INVALID_ARGUMENT, "UTF-8",
           seginf_index_save(index, "index\xff.seginf"));
    EXPECT("index_save: directory does not exist", SEGINF_ERR_IO, "no_such_dir",
           seginf_index_save(index, scratch(dir, "no_such_dir/index.seginf")));
    EXPECT("index_save: valid", SEGINF_OK, NULL, seginf_index_save(index, path));

    EXPECT("index_open: path NULL", SEGINF_ERR_NULL_ARGUMENT, "`path`",
           seginf_index_open(NULL, crf, &out));
    EXPECT("index_open: crf NULL", SEGINF_ERR_NULL_ARGUMENT, "`crf`",
           seginf_index_open(path, NULL, &out));
    EXPECT("index_open: out NULL", SEGINF_ERR_NULL_ARGUMENT, "`out`",
           seginf_index_open(path, crf, NULL));
    EXPECT("index_open: non-UTF-8 path", SEGINF_ERR_INVALID_ARGUMENT, "UTF-8",
           seginf_index_open("index\xff.seginf", crf, &out));
    snprintf(bad, sizeof bad, "%s", scratch(dir, "does_not_exist.seginf"));
    remove(bad);
    EXPECT("index_open: missing file", SEGINF_ERR_IO, "does_not_exist.seginf",
           seginf_index_open(bad, crf, &out));
    snprintf(bad, sizeof bad, "%s", scratch(dir, "garbage.seginf"));
    write_bytes(bad, "this is not a seginf index, only some text", 42);
    EXPECT("index_open: garbage file", SEGINF_ERR_FORMAT, "garbage.seginf",
           seginf_index_open(bad, crf, &out));
    snprintf(bad, sizeof bad, "%s", scratch(dir, "empty.seginf"));
    write_bytes(bad, "", 0);
    EXPECT("index_open: empty file", SEGINF_ERR_FORMAT, NULL, seginf_index_open(bad, crf, &out));
    EXPECT("index_open: a directory", SEGINF_ERR_IO, NULL, seginf_index_open(dir, crf, &out));
    EXPECT("index_open: built for another CRF", SEGINF_ERR_MODEL_MISMATCH, "another CRF",
           seginf_index_open(path, other_crf, &out));

    bytes = read_bytes(path, &len);
    if (bytes == NULL || len < 16) {
        CHECK("read valid.seginf back", 0);
        free(bytes);
        return;
    }
    /* safetensors: u64 little-endian header length, the JSON header, then the tensor data. */
    for (header = 0, at = 8; at-- > 0;) header = header * 256 + bytes[at];
    snprintf(bad, sizeof bad, "%s", scratch(dir, "truncated.seginf"));
    write_bytes(bad, bytes, len / 2);
    EXPECT("index_open: truncated to half", SEGINF_ERR_FORMAT, "truncated.seginf",
           seginf_index_open(bad, crf, &out));
    write_bytes(bad, bytes, len - 1);
    EXPECT("index_open: truncated by one byte", SEGINF_ERR_FORMAT, NULL,
           seginf_index_open(bad, crf, &out));
    if (8 + header < len) {
        at = 8 + header + (len - 8 - header) / 2; /* the middle of the tensor data */
        bytes[at] ^= 0x10;
        snprintf(bad, sizeof bad, "%s", scratch(dir, "flipped.seginf"));
        write_bytes(bad, bytes, len);
        EXPECT("index_open: one flipped byte in the data", SEGINF_ERR_FORMAT, "checksum",
               seginf_index_open(bad, crf, &out));
    } else {
        CHECK("valid.seginf has tensor data after its header", 0);
    }
    free(bytes);
    CHECK("index_open: *out untouched by failures", out == SENTINEL(seginf_index));

    EXPECT("index_open: valid", SEGINF_OK, NULL, seginf_index_open(path, crf, &out));
    if (out == SENTINEL(seginf_index) || out == NULL) {
        CHECK("index_open: *out set", 0);
        return;
    }
    CHECK("index_open: the same tokens and sequences",
          seginf_index_num_tokens(out) == NT && seginf_index_num_sequences(out) == NS);
    /* Saving a memory-mapped index over its own file replaces the file atomically; the open
     * handle keeps reading the old one. */
    EXPECT("index_save: an opened index over its own file", SEGINF_OK, NULL,
           seginf_index_save(out, path));
    CHECK("index_save: the open handle still reads its tokens",
          seginf_index_num_tokens(out) == NT &&
              seginf_index_token(out, NT - 1, NULL, NULL, NULL) == SEGINF_OK);
    seginf_index_free(out);
    out = SENTINEL(seginf_index);
    EXPECT("index_open: the re-saved file", SEGINF_OK, NULL, seginf_index_open(path, crf, &out));
    CHECK("index_open: the re-saved file has the same tokens",
          out != SENTINEL(seginf_index) && seginf_index_num_tokens(out) == NT);
    seginf_index_free(out == SENTINEL(seginf_index) ? NULL : out);
}

static void check_query_setters(const seginf_index *index) {
    seginf_query *q = SENTINEL(seginf_query);
    const uint32_t labels[2] = {0, C};
    const uint64_t docs[2] = {7, 8};
    double before[NT], after[NT];

    seginf_query_free(NULL);
    CHECK("query_free(NULL) is a no-op", 1);
    CHECK("query_num_items(NULL) = 0", seginf_query_num_items(NULL) == 0);
    EXPECT("query_new: index NULL", SEGINF_ERR_NULL_ARGUMENT, "`index`",
           seginf_query_new(NULL, &q));
    EXPECT("query_new: out NULL", SEGINF_ERR_NULL_ARGUMENT, "`out`", seginf_query_new(index, NULL));
    CHECK("query_new: *out untouched by failures", q == SENTINEL(seginf_query));
    EXPECT("query_new", SEGINF_OK, NULL, seginf_query_new(index, &q));
    if (q == SENTINEL(seginf_query) || q == NULL) {
        CHECK("query_new: *out set", 0);
        return;
    }
    CHECK("query_num_items: N tokens", seginf_query_num_items(q) == NT);

    EXPECT("set_granularity: query NULL", SEGINF_ERR_NULL_ARGUMENT, "`query`",
           seginf_query_set_granularity(NULL, SEGINF_GRANULARITY_TOKEN));
    EXPECT("set_granularity: 4 unknown", SEGINF_ERR_INVALID_ARGUMENT, "seginf_granularity",
           seginf_query_set_granularity(q, 4));
    EXPECT("set_granularity: -1 unknown", SEGINF_ERR_INVALID_ARGUMENT, "seginf_granularity",
           seginf_query_set_granularity(q, -1));
    EXPECT("set_normalization: query NULL", SEGINF_ERR_NULL_ARGUMENT, "`query`",
           seginf_query_set_normalization(NULL, SEGINF_NORMALIZATION_NONE));
    EXPECT("set_normalization: 2 unknown", SEGINF_ERR_INVALID_ARGUMENT, "seginf_normalization",
           seginf_query_set_normalization(q, 2));
    EXPECT("set_normalization: INT32_MAX unknown", SEGINF_ERR_INVALID_ARGUMENT,
           "seginf_normalization", seginf_query_set_normalization(q, INT32_MAX));
    EXPECT("set_ranking_copy: query NULL", SEGINF_ERR_NULL_ARGUMENT, "`query`",
           seginf_query_set_ranking_copy(NULL, 1));
    EXPECT("set_ranking_copy: 2 is not a flag", SEGINF_ERR_INVALID_ARGUMENT, "0 or 1",
           seginf_query_set_ranking_copy(q, 2));
    EXPECT("set_ranking_copy: -1 is not a flag", SEGINF_ERR_INVALID_ARGUMENT, "0 or 1",
           seginf_query_set_ranking_copy(q, -1));
    EXPECT("set_hessian: query NULL", SEGINF_ERR_NULL_ARGUMENT, "`query`",
           seginf_query_set_hessian(NULL, SEGINF_HESSIAN_IDENTITY, 1.0));
    EXPECT("set_hessian: mode 4 unknown", SEGINF_ERR_INVALID_ARGUMENT, "seginf_hessian",
           seginf_query_set_hessian(q, 4, 1.0));
    EXPECT("set_hessian: KFAC needs a fitted curvature", SEGINF_ERR_INVALID_ARGUMENT,
           "seginf_query_set_curvature", seginf_query_set_hessian(q, SEGINF_HESSIAN_KFAC, 1.0));
    EXPECT("set_hessian: EXACT needs a fitted curvature", SEGINF_ERR_INVALID_ARGUMENT,
           "seginf_curvature_fit", seginf_query_set_hessian(q, SEGINF_HESSIAN_EXACT, 1.0));
    /* Fitted curvatures (made from training data) are checked in train_null_args.c. */
    EXPECT("set_curvature: query NULL", SEGINF_ERR_NULL_ARGUMENT, "`query`",
           seginf_query_set_curvature(NULL, NULL));
    EXPECT("set_curvature: curvature NULL", SEGINF_ERR_NULL_ARGUMENT, "`curvature`",
           seginf_query_set_curvature(q, NULL));
    EXPECT("set_hessian: mode -1 unknown", SEGINF_ERR_INVALID_ARGUMENT, "seginf_hessian",
           seginf_query_set_hessian(q, -1, 1.0));
    EXPECT("set_hessian: damping 0", SEGINF_ERR_INVALID_ARGUMENT, "damping",
           seginf_query_set_hessian(q, SEGINF_HESSIAN_IDENTITY, 0.0));
    EXPECT("set_hessian: damping -0", SEGINF_ERR_INVALID_ARGUMENT, "damping",
           seginf_query_set_hessian(q, SEGINF_HESSIAN_IDENTITY, -0.0));
    EXPECT("set_hessian: damping -1", SEGINF_ERR_INVALID_ARGUMENT, "damping",
           seginf_query_set_hessian(q, SEGINF_HESSIAN_IDENTITY, -1.0));
    EXPECT("set_hessian: damping NaN", SEGINF_ERR_INVALID_ARGUMENT, "damping",
           seginf_query_set_hessian(q, SEGINF_HESSIAN_IDENTITY, NAN));
    EXPECT("set_hessian: damping +inf", SEGINF_ERR_INVALID_ARGUMENT, "damping",
           seginf_query_set_hessian(q, SEGINF_HESSIAN_IDENTITY, INFINITY));
    EXPECT("set_hessian: damping -inf", SEGINF_ERR_INVALID_ARGUMENT, "damping",
           seginf_query_set_hessian(q, SEGINF_HESSIAN_IDENTITY, -INFINITY));
    EXPECT("set_label_filter: query NULL", SEGINF_ERR_NULL_ARGUMENT, "`query`",
           seginf_query_set_label_filter(NULL, labels, 1));
    EXPECT("set_label_filter: labels NULL, len 1", SEGINF_ERR_NULL_ARGUMENT, "`labels`",
           seginf_query_set_label_filter(q, NULL, 1));
    EXPECT("set_label_filter: label = C", SEGINF_ERR_LABEL_OUT_OF_RANGE, "3",
           seginf_query_set_label_filter(q, labels, 2));
    EXPECT("set_excluded_docs: query NULL", SEGINF_ERR_NULL_ARGUMENT, "`query`",
           seginf_query_set_excluded_docs(NULL, docs, 2));
    EXPECT("set_excluded_docs: doc_ids NULL, len 2", SEGINF_ERR_NULL_ARGUMENT, "`doc_ids`",
           seginf_query_set_excluded_docs(q, NULL, 2));

    /* The failed setters left the defaults: the scores are those of a fresh query, then the
     * valid setters change them. */
    fill_f64(before, NT);
    fill_f64(after, NT);
    EXPECT("scores after failed setters", SEGINF_OK, NULL,
           seginf_query_scores(q, FEATURES, N, GOLD, 1, 2, before, NT));
    CHECK("failed setters left the defaults: every token scored, none NaN",
          !kept_f64(before, NT) && !isnan(before[0]) && !isnan(before[NT - 1]));
    EXPECT("set_hessian: damping 2", SEGINF_OK, NULL,
           seginf_query_set_hessian(q, SEGINF_HESSIAN_IDENTITY, 2.0));
    EXPECT("set_label_filter: labels NULL, len 0 clears", SEGINF_OK, NULL,
           seginf_query_set_label_filter(q, NULL, 0));
    EXPECT("set_excluded_docs: doc_ids NULL, len 0 clears", SEGINF_OK, NULL,
           seginf_query_set_excluded_docs(q, NULL, 0));
    EXPECT("scores with damping 2", SEGINF_OK, NULL,
           seginf_query_scores(q, FEATURES, N, GOLD, 1, 2, after, NT));
    CHECK("damping 2 halves every score",
          after[0] == before[0] / 2 && after[4] == before[4] / 2 && after[NT - 1] == before[NT - 1] / 2);
    seginf_query_free(q);
}

/* seginf_query_run and seginf_query_scores: the single-segment calls. */
static void check_query_run_and_scores(const seginf_index *index) {
    seginf_query *q = NULL;
    const float *x = FEATURES;
    seginf_hit sup[BIG], opp[BIG];
    size_t found = SENTINEL_SIZE;
    double scores[BIG];
    const uint32_t filter[1] = {1};
    unsigned char raw[sizeof(seginf_hit) * 2];
    seginf_hit *misaligned = (seginf_hit *)(void *)(raw + 1);

    if (seginf_query_new(index, &q) != SEGINF_OK) {
        CHECK("query_new (fixture)", 0);
        return;
    }
    fill_hits(sup, BIG);
    fill_hits(opp, BIG);
    fill_f64(scores, BIG);
#define RUN(what, want, needle, query, x_, n, y, first, last, s, o, k, f) \
    EXPECT("query_run: " what, (want), (needle),                          \
           seginf_query_run((query), (x_), (n), (y), (first), (last), (s), (o), (k), (f)))
#define SCORES(what, want, needle, query, x_, n, y, first, last, out, len) \
    EXPECT("query_scores: " what, (want), (needle),                        \
           seginf_query_scores((query), (x_), (n), (y), (first), (last), (out), (len)))

    RUN("query NULL", SEGINF_ERR_NULL_ARGUMENT, "`query`", NULL, x, N, GOLD, 1, 2, sup, opp, K,
        &found);
    RUN("features NULL", SEGINF_ERR_NULL_ARGUMENT, "`features`", q, NULL, N, GOLD, 1, 2, sup, opp,
        K, &found);
    RUN("labels NULL", SEGINF_ERR_NULL_ARGUMENT, "`labels`", q, x, N, NULL, 1, 2, sup, opp, K,
        &found);
    RUN("supporting NULL", SEGINF_ERR_NULL_ARGUMENT, "`supporting`", q, x, N, GOLD, 1, 2, NULL,
        opp, K, &found);
    RUN("opposing NULL", SEGINF_ERR_NULL_ARGUMENT, "`opposing`", q, x, N, GOLD, 1, 2, sup, NULL,
        K, &found);
    RUN("found NULL", SEGINF_ERR_NULL_ARGUMENT, "`found`", q, x, N, GOLD, 1, 2, sup, opp, K, NULL);
    RUN("misaligned supporting", SEGINF_ERR_INVALID_ARGUMENT, "aligned", q, x, N, GOLD, 1, 2,
        misaligned, opp, 1, &found);
    RUN("n = 0", SEGINF_ERR_INVALID_ARGUMENT, "n = 0", q, x, 0, GOLD, 0, 0, sup, opp, K, &found);
    RUN("n x d overflows", SEGINF_ERR_INVALID_ARGUMENT, NULL, q, x, SIZE_MAX, GOLD, 0, 0, sup, opp,
        K, &found);
    RUN("k_capacity = 0", SEGINF_ERR_INVALID_ARGUMENT, "k_capacity", q, x, N, GOLD, 1, 2, sup, opp,
        0, &found);
    RUN("label = C", SEGINF_ERR_LABEL_OUT_OF_RANGE, "labels[1]", q, x, N, label_at(GOLD, N, 1, C),
        1, 2, sup, opp, K, &found);
    RUN("label = C outside the segment", SEGINF_ERR_LABEL_OUT_OF_RANGE, "labels[3]", q, x, N,
        label_at(GOLD, N, 3, C + 5), 0, 0, sup, opp, K, &found);
    RUN("first > last", SEGINF_ERR_BAD_SEGMENT, "first = 2 > last = 1", q, x, N, GOLD, 2, 1, sup,
        opp, K, &found);
    RUN("last = n", SEGINF_ERR_BAD_SEGMENT, "last = 4", q, x, N, GOLD, 1, N, sup, opp, K, &found);
    RUN("last = SIZE_MAX", SEGINF_ERR_BAD_SEGMENT, NULL, q, x, N, GOLD, 0, SIZE_MAX, sup, opp, K,
        &found);
    RUN("NaN feature", SEGINF_ERR_NON_FINITE, "features[1][0]", q, with_value(x, N * D, 2, NAN), N,
        GOLD, 1, 2, sup, opp, K, &found);
    RUN("+inf feature", SEGINF_ERR_NON_FINITE, "features", q, with_value(x, N * D, 7, INFINITY), N,
        GOLD, 1, 2, sup, opp, K, &found);
    RUN("impossible labels", SEGINF_ERR_IMPOSSIBLE_LABELS, NULL, q, x, N, IMPOSSIBLE, 1, 1, sup,
        opp, K, &found);

    SCORES("query NULL", SEGINF_ERR_NULL_ARGUMENT, "`query`", NULL, x, N, GOLD, 1, 2, scores, NT);
    SCORES("features NULL", SEGINF_ERR_NULL_ARGUMENT, "`features`", q, NULL, N, GOLD, 1, 2, scores,
           NT);
    SCORES("labels NULL", SEGINF_ERR_NULL_ARGUMENT, "`labels`", q, x, N, NULL, 1, 2, scores, NT);
    SCORES("scores_out NULL", SEGINF_ERR_NULL_ARGUMENT, "`scores_out`", q, x, N, GOLD, 1, 2, NULL,
           NT);
    SCORES("len = N - 1", SEGINF_ERR_DIMENSION_MISMATCH, "len = 8", q, x, N, GOLD, 1, 2, scores,
           NT - 1);
    SCORES("len = N + 1", SEGINF_ERR_DIMENSION_MISMATCH, "len = 10", q, x, N, GOLD, 1, 2, scores,
           NT + 1);
    SCORES("len = 0", SEGINF_ERR_DIMENSION_MISMATCH, NULL, q, x, N, GOLD, 1, 2, scores, 0);
    SCORES("n = 0", SEGINF_ERR_INVALID_ARGUMENT, "n = 0", q, x, 0, GOLD, 0, 0, scores, NT);
    SCORES("label = C", SEGINF_ERR_LABEL_OUT_OF_RANGE, "labels[0]", q, x, N,
           label_at(GOLD, N, 0, C), 1, 2, scores, NT);
    SCORES("first > last", SEGINF_ERR_BAD_SEGMENT, NULL, q, x, N, GOLD, 3, 2, scores, NT);
    SCORES("last = n", SEGINF_ERR_BAD_SEGMENT, NULL, q, x, N, GOLD, 0, N, scores, NT);
    SCORES("NaN feature", SEGINF_ERR_NON_FINITE, "features", q, with_value(x, N * D, 5, NAN), N,
           GOLD, 1, 2, scores, NT);
    SCORES("+inf feature", SEGINF_ERR_NON_FINITE, "features", q,
           with_value(x, N * D, 1, INFINITY), N, GOLD, 1, 2, scores, NT);
    SCORES("impossible labels", SEGINF_ERR_IMPOSSIBLE_LABELS, NULL, q, x, N, IMPOSSIBLE, 0, 1,
           scores, NT);

    /* Option mixes that cannot run. */
    seginf_query_set_granularity(q, SEGINF_GRANULARITY_INSTANCE);
    SCORES("instance granularity: len = N tokens, not S sequences", SEGINF_ERR_DIMENSION_MISMATCH,
           NULL, q, x, N, GOLD, 1, 2, scores, NT);
    seginf_query_set_label_filter(q, filter, 1);
    RUN("instance granularity with a label filter", SEGINF_ERR_INVALID_ARGUMENT, "label filter",
        q, x, N, GOLD, 1, 2, sup, opp, K, &found);
    SCORES("instance granularity with a label filter", SEGINF_ERR_INVALID_ARGUMENT,
           "label filter", q, x, N, GOLD, 1, 2, scores, NS);
    seginf_query_set_label_filter(q, NULL, 0);
    seginf_query_set_granularity(q, SEGINF_GRANULARITY_NEAREST_DOT);
    seginf_query_set_normalization(q, SEGINF_NORMALIZATION_GRADIENT_NORM);
    RUN("nearest_dot with gradient-norm normalisation", SEGINF_ERR_INVALID_ARGUMENT,
        "normalisation", q, x, N, GOLD, 1, 2, sup, opp, K, &found);
    seginf_query_set_granularity(q, SEGINF_GRANULARITY_NEAREST_COSINE);
    RUN("nearest_cosine with gradient-norm normalisation", SEGINF_ERR_INVALID_ARGUMENT,
        "normalisation", q, x, N, GOLD, 1, 2, sup, opp, K, &found);
    SCORES("nearest_cosine with gradient-norm normalisation", SEGINF_ERR_INVALID_ARGUMENT,
           "normalisation", q, x, N, GOLD, 1, 2, scores, NT);
    CHECK("query_run: hits and found untouched by failures",
          kept_hits(sup, BIG) && kept_hits(opp, BIG) && found == SENTINEL_SIZE);
    CHECK("query_scores: scores untouched by failures", kept_f64(scores, BIG));

    /* Valid again: the instance query writes S scores; a token query K hits per end. */
    seginf_query_set_normalization(q, SEGINF_NORMALIZATION_NONE);
    seginf_query_set_granularity(q, SEGINF_GRANULARITY_INSTANCE);
    SCORES("instance granularity, len = S", SEGINF_OK, NULL, q, x, N, GOLD, 1, 2, scores, NS);
    CHECK("query_scores: writes exactly S values", !kept_f64(scores, NS) &&
                                                       kept_f64(scores + NS, BIG - NS));
    seginf_query_set_granularity(q, SEGINF_GRANULARITY_TOKEN);
    RUN("valid, k_capacity = 2", SEGINF_OK, NULL, q, x, N, GOLD, 1, 2, sup, opp, 2, &found);
    CHECK("query_run: 2 hits per end, nothing past k_capacity",
          found == 2 && !kept_hits(sup, 2) && !kept_hits(opp, 2) && kept_hits(sup + 2, BIG - 2) &&
              kept_hits(opp + 2, BIG - 2) && sup[0].score <= sup[1].score &&
              opp[0].score >= opp[1].score);
    fill_hits(sup, BIG);
    fill_hits(opp, BIG);
    RUN("k_capacity larger than the index", SEGINF_OK, NULL, q, x, N, GOLD, 1, 2, sup, opp, BIG,
        &found);
    CHECK("query_run: found = N when k_capacity > N",
          found == NT && !kept_hits(sup, NT) && kept_hits(sup + NT, BIG - NT));
#undef RUN
#undef SCORES
    seginf_query_free(q);
}

static void check_query_run_batch(const seginf_index *index) {
    seginf_query *q = NULL;
    /* Two test sequences back to back: the training docs 7 (4 tokens) and 8 (3 tokens). */
    const size_t lengths[2] = {4, 3}, zero_length[2] = {4, 0};
    const size_t seq[3] = {0, 1, 1}, first[3] = {1, 0, 2}, last[3] = {2, 1, 2};
    const size_t bad_seq[3] = {0, 2, 1}, past_end[3] = {1, 1, 3}, backwards[3] = {2, 2, 1};
    const size_t zero_seg[3] = {0, 0, 0}, overflow[2] = {SIZE_MAX, 1};
    const float *x = TRAIN_X;
    const uint32_t *y = TRAIN_Y;
    seginf_hit sup[BIG], opp[BIG];
    size_t found[8];

    if (seginf_query_new(index, &q) != SEGINF_OK) {
        CHECK("query_new (fixture)", 0);
        return;
    }
    fill_hits(sup, BIG);
    fill_hits(opp, BIG);
    fill_size(found, 8);
#define BATCH(what, want, needle, query, x_, y_, lens, nseq, s, f, l, nseg, sp, op, k, fd)      \
    EXPECT("query_run_batch: " what, (want), (needle),                                        \
           seginf_query_run_batch((query), (x_), (y_), (lens), (nseq), (s), (f), (l), (nseg), \
                                  (sp), (op), (k), (fd)))

    BATCH("query NULL", SEGINF_ERR_NULL_ARGUMENT, "`query`", NULL, x, y, lengths, 2, seq, first,
          last, 3, sup, opp, K, found);
    BATCH("features NULL", SEGINF_ERR_NULL_ARGUMENT, "`features`", q, NULL, y, lengths, 2, seq,
          first, last, 3, sup, opp, K, found);
    BATCH("labels NULL", SEGINF_ERR_NULL_ARGUMENT, "`labels`", q, x, NULL, lengths, 2, seq, first,
          last, 3, sup, opp, K, found);
    BATCH("seq_lengths NULL", SEGINF_ERR_NULL_ARGUMENT, "`seq_lengths`", q, x, y, NULL, 2, seq,
          first, last, 3, sup, opp, K, found);
    BATCH("seg_seq NULL", SEGINF_ERR_NULL_ARGUMENT, "`seg_seq`", q, x, y, lengths, 2, NULL, first,
          last, 3, sup, opp, K, found);
    BATCH("seg_first NULL", SEGINF_ERR_NULL_ARGUMENT, "`seg_first`", q, x, y, lengths, 2, seq,
          NULL, last, 3, sup, opp, K, found);
    BATCH("seg_last NULL", SEGINF_ERR_NULL_ARGUMENT, "`seg_last`", q, x, y, lengths, 2, seq, first,
          NULL, 3, sup, opp, K, found);
    BATCH("supporting NULL", SEGINF_ERR_NULL_ARGUMENT, "`supporting`", q, x, y, lengths, 2, seq,
          first, last, 3, NULL, opp, K, found);
    BATCH("opposing NULL", SEGINF_ERR_NULL_ARGUMENT, "`opposing`", q, x, y, lengths, 2, seq, first,
          last, 3, sup, NULL, K, found);
    BATCH("found NULL", SEGINF_ERR_NULL_ARGUMENT, "`found`", q, x, y, lengths, 2, seq, first, last,
          3, sup, opp, K, NULL);
    BATCH("k_capacity = 0", SEGINF_ERR_INVALID_ARGUMENT, "k_capacity", q, x, y, lengths, 2, seq,
          first, last, 3, sup, opp, 0, found);
    BATCH("num_segments = 0", SEGINF_ERR_INVALID_ARGUMENT, "no test segments", q, x, y, lengths, 2,
          seq, first, last, 0, sup, opp, K, found);
    BATCH("num_seqs = 0", SEGINF_ERR_INVALID_ARGUMENT, "seg_seq[0]", q, x, y, lengths, 0, seq,
          first, last, 3, sup, opp, K, found);
    BATCH("seg_seq out of range", SEGINF_ERR_INVALID_ARGUMENT, "seg_seq[1] = 2", q, x, y, lengths,
          2, bad_seq, first, last, 3, sup, opp, K, found);
    BATCH("seg_last past its sequence's end", SEGINF_ERR_BAD_SEGMENT, "last = 3", q, x, y, lengths,
          2, seq, first, past_end, 3, sup, opp, K, found);
    BATCH("seg_first > seg_last", SEGINF_ERR_BAD_SEGMENT, NULL, q, x, y, lengths, 2, seq,
          backwards, last, 3, sup, opp, K, found);
    BATCH("a segment of an empty sequence", SEGINF_ERR_INVALID_ARGUMENT, "n = 0", q, x, y,
          zero_length, 2, seq, zero_seg, zero_seg, 3, sup, opp, K, found);
    BATCH("NaN feature in the second sequence", SEGINF_ERR_NON_FINITE, "features", q,
          with_value(x, 7 * D, 5 * D, NAN), y, lengths, 2, seq, first, last, 3, sup, opp, K, found);
    BATCH("+inf feature in the second sequence", SEGINF_ERR_NON_FINITE, "features", q,
          with_value(x, 7 * D, 6 * D + 1, INFINITY), y, lengths, 2, seq, first, last, 3, sup, opp,
          K, found);
    BATCH("label = C in the second sequence", SEGINF_ERR_LABEL_OUT_OF_RANGE, NULL, q, x,
          label_at(y, 7, 6, C), lengths, 2, seq, first, last, 3, sup, opp, K, found);
    /* O, I-X, O, O: the first segment's left neighbour O cannot precede its I-X. */
    BATCH("impossible labels in the first sequence", SEGINF_ERR_IMPOSSIBLE_LABELS, NULL, q, x,
          label_at(y, 7, 0, 0), lengths, 2, seq, first, last, 3, sup, opp, K, found);
    BATCH("seq_lengths add up past SIZE_MAX", SEGINF_ERR_INVALID_ARGUMENT, "SIZE_MAX", q, x, y,
          overflow, 2, seq, first, last, 3, sup, opp, K, found);
    CHECK("query_run_batch: hits and found untouched by failures",
          kept_hits(sup, BIG) && kept_hits(opp, BIG) && kept_size(found, 8));

    BATCH("valid", SEGINF_OK, NULL, q, x, y, lengths, 2, seq, first, last, 3, sup, opp, K, found);
    CHECK("query_run_batch: K hits per segment, 3 counts, nothing past them",
          found[0] == K && found[1] == K && found[2] == K && kept_size(found + 3, 5) &&
              !kept_hits(sup + 2 * K, K) && kept_hits(sup + 3 * K, BIG - 3 * K) &&
              kept_hits(opp + 3 * K, BIG - 3 * K));
    /* The same batch without the i16 ranking copy: the same hits, bit for bit. */
    {
        seginf_hit sup2[3 * K], opp2[3 * K];
        size_t found2[3];
        EXPECT("set_ranking_copy: off", SEGINF_OK, NULL, seginf_query_set_ranking_copy(q, 0));
        BATCH("valid, ranking copy off", SEGINF_OK, NULL, q, x, y, lengths, 2, seq, first, last,
              3, sup2, opp2, K, found2);
        CHECK("query_run_batch: the same hits with and without the ranking copy",
              memcmp(found, found2, sizeof found2) == 0 &&
                  memcmp(sup, sup2, sizeof sup2) == 0 && memcmp(opp, opp2, sizeof opp2) == 0);
    }
#undef BATCH
    seginf_query_free(q);
}

/* seginf_index_num_documents and seginf_rank_training: bad input, then values. */
static void fill_docs(seginf_doc_score *v, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) {
        v[i].doc_id = SENTINEL_U64;
        v[i].mean = SENTINEL_F64;
        v[i].max = SENTINEL_F64;
        v[i].items = SENTINEL_U64;
    }
}
static int kept_docs(const seginf_doc_score *v, size_t n) {
    size_t i;
    for (i = 0; i < n; i++)
        if (v[i].doc_id != SENTINEL_U64 || v[i].mean != SENTINEL_F64 ||
            v[i].max != SENTINEL_F64 || v[i].items != SENTINEL_U64)
            return 0;
    return 1;
}

/* The mean of the `top` largest of v[0..n) (n <= BIG). */
static double top_mean(const double *v, size_t n, size_t top) {
    double sorted[BIG], sum = 0, t;
    size_t i, j;
    memcpy(sorted, v, n * sizeof *v);
    for (i = 1; i < n; i++) /* insertion sort, descending */
        for (j = i; j > 0 && sorted[j] > sorted[j - 1]; j--) {
            t = sorted[j];
            sorted[j] = sorted[j - 1];
            sorted[j - 1] = t;
        }
    if (top > n) top = n;
    for (i = 0; i < top; i++) sum += sorted[i];
    return sum / (double)top;
}

static void check_rank_training(const seginf_index *index) {
    seginf_query *q = NULL;
    /* The clean set: training docs 7 and 8 (7 tokens), back to back. */
    const size_t lengths[2] = {4, 3};
    const float *x = TRAIN_X;
    const uint32_t *y = TRAIN_Y;
    double scores[BIG], stats[BIG], per_clean[7][NT], column[7], want;
    seginf_doc_score docs[BIG];
    size_t num_docs = SENTINEL_SIZE, count = SENTINEL_SIZE, k, t;
    const uint32_t filter[1] = {1};
    unsigned char raw[sizeof(seginf_doc_score) * 4];
    seginf_doc_score *misaligned = (seginf_doc_score *)(void *)(raw + 1);
    int ok;

    EXPECT("num_documents: index NULL", SEGINF_ERR_NULL_ARGUMENT, "`index`",
           seginf_index_num_documents(NULL, 0, &count));
    EXPECT("num_documents: out NULL", SEGINF_ERR_NULL_ARGUMENT, "`out`",
           seginf_index_num_documents(index, 0, NULL));
    EXPECT("num_documents: shift 64", SEGINF_ERR_INVALID_ARGUMENT, "63",
           seginf_index_num_documents(index, 64, &count));
    CHECK("num_documents: out untouched by failures", count == SENTINEL_SIZE);
    EXPECT("num_documents: shift 0", SEGINF_OK, NULL, seginf_index_num_documents(index, 0, &count));
    CHECK("num_documents: 3 doc ids", count == NS);
    EXPECT("num_documents: shift 4", SEGINF_OK, NULL, seginf_index_num_documents(index, 4, &count));
    CHECK("num_documents: 7, 8, 9 >> 4 are one document", count == 1);

    if (seginf_query_new(index, &q) != SEGINF_OK) {
        CHECK("query_new (fixture)", 0);
        return;
    }
    fill_f64(scores, BIG);
    fill_docs(docs, BIG);
#define RANK(what, want, needle, query, method, top, shift, cx, cy, cl, nc, ts, tl, d, dc, nd) \
    EXPECT("rank_training: " what, (want), (needle),                                          \
           seginf_rank_training((query), (method), (top), (shift), (cx), (cy), (cl), (nc), (ts), \
                                (tl), (d), (dc), (nd)))
    RANK("query NULL", SEGINF_ERR_NULL_ARGUMENT, "`query`", NULL, SEGINF_RANK_SEGMENT_INFLUENCE,
         10, 0, x, y, lengths, 2, scores, NT, docs, BIG, &num_docs);
    RANK("method -1", SEGINF_ERR_INVALID_ARGUMENT, "seginf_rank_method", q, -1, 10, 0, x, y,
         lengths, 2, scores, NT, docs, BIG, &num_docs);
    RANK("method 9", SEGINF_ERR_INVALID_ARGUMENT, "seginf_rank_method", q, 9, 10, 0, x, y,
         lengths, 2, scores, NT, docs, BIG, &num_docs);
    RANK("top 0", SEGINF_ERR_INVALID_ARGUMENT, "top", q, SEGINF_RANK_SEGMENT_INFLUENCE, 0, 0, x,
         y, lengths, 2, scores, NT, docs, BIG, &num_docs);
    RANK("shift 64", SEGINF_ERR_INVALID_ARGUMENT, "63", q, SEGINF_RANK_TOKEN_LOSS, 10, 64, NULL,
         NULL, NULL, 0, scores, NT, docs, BIG, &num_docs);
    RANK("num_docs NULL", SEGINF_ERR_NULL_ARGUMENT, "`num_docs`", q, SEGINF_RANK_TOKEN_LOSS, 10,
         0, NULL, NULL, NULL, 0, scores, NT, docs, BIG, NULL);
    RANK("token_scores NULL with len N", SEGINF_ERR_NULL_ARGUMENT, "`token_scores`", q,
         SEGINF_RANK_TOKEN_LOSS, 10, 0, NULL, NULL, NULL, 0, NULL, NT, docs, BIG, &num_docs);
    RANK("token_scores_len N - 1", SEGINF_ERR_DIMENSION_MISMATCH, "token_scores_len", q,
         SEGINF_RANK_TOKEN_LOSS, 10, 0, NULL, NULL, NULL, 0, scores, NT - 1, docs, BIG, &num_docs);
    RANK("docs NULL with capacity 3", SEGINF_ERR_NULL_ARGUMENT, "`docs`", q,
         SEGINF_RANK_TOKEN_LOSS, 10, 0, NULL, NULL, NULL, 0, scores, NT, NULL, 3, &num_docs);
    RANK("docs_capacity 2 < 3 documents", SEGINF_ERR_INVALID_ARGUMENT, "docs_capacity", q,
         SEGINF_RANK_TOKEN_LOSS, 10, 0, NULL, NULL, NULL, 0, scores, NT, docs, 2, &num_docs);
    RANK("docs misaligned", SEGINF_ERR_INVALID_ARGUMENT, "`docs`", q, SEGINF_RANK_TOKEN_LOSS, 10,
         0, NULL, NULL, NULL, 0, scores, NT, misaligned, 3, &num_docs);
    RANK("clean_lengths NULL", SEGINF_ERR_NULL_ARGUMENT, "`clean_lengths`", q,
         SEGINF_RANK_SEGMENT_INFLUENCE, 10, 0, x, y, NULL, 2, scores, NT, docs, BIG, &num_docs);
    RANK("clean_features NULL", SEGINF_ERR_NULL_ARGUMENT, "`features`", q,
         SEGINF_RANK_SEGMENT_INFLUENCE, 10, 0, NULL, y, lengths, 2, scores, NT, docs, BIG,
         &num_docs);
    RANK("clean_labels NULL", SEGINF_ERR_NULL_ARGUMENT, "`labels`", q,
         SEGINF_RANK_INSTANCE_INFLUENCE, 10, 0, x, NULL, lengths, 2, scores, NT, docs, BIG,
         &num_docs);
    RANK("no clean set for segment influence", SEGINF_ERR_INVALID_ARGUMENT, "clean", q,
         SEGINF_RANK_SEGMENT_INFLUENCE, 10, 0, NULL, NULL, NULL, 0, scores, NT, docs, BIG,
         &num_docs);
    RANK("no clean set for nearest", SEGINF_ERR_INVALID_ARGUMENT, "clean", q,
         SEGINF_RANK_SEGMENT_NEAREST, 10, 0, NULL, NULL, NULL, 0, scores, NT, docs, BIG,
         &num_docs);
    RANK("NaN clean feature", SEGINF_ERR_NON_FINITE, "features", q, SEGINF_RANK_SEGMENT_INFLUENCE,
         10, 0, with_value(x, 7 * D, 5, NAN), y, lengths, 2, scores, NT, docs, BIG, &num_docs);
    RANK("clean label = C", SEGINF_ERR_LABEL_OUT_OF_RANGE, NULL, q, SEGINF_RANK_INSTANCE_INFLUENCE,
         10, 0, x, label_at(y, 7, 6, C), lengths, 2, scores, NT, docs, BIG, &num_docs);
    RANK("impossible clean labels", SEGINF_ERR_IMPOSSIBLE_LABELS, NULL, q,
         SEGINF_RANK_SEGMENT_INFLUENCE, 10, 0, x, label_at(y, 7, 0, 0), lengths, 2, scores, NT,
         docs, BIG, &num_docs);
    EXPECT("set_normalization: gradient norm", SEGINF_OK, NULL,
           seginf_query_set_normalization(q, SEGINF_NORMALIZATION_GRADIENT_NORM));
    RANK("nearest with normalisation", SEGINF_ERR_INVALID_ARGUMENT, "normalisation", q,
         SEGINF_RANK_SEGMENT_NEAREST, 10, 0, x, y, lengths, 2, scores, NT, docs, BIG, &num_docs);
    EXPECT("set_normalization: none", SEGINF_OK, NULL,
           seginf_query_set_normalization(q, SEGINF_NORMALIZATION_NONE));
    EXPECT("set_label_filter {1}", SEGINF_OK, NULL, seginf_query_set_label_filter(q, filter, 1));
    RANK("label filter set on the query", SEGINF_ERR_INVALID_ARGUMENT, "filter", q,
         SEGINF_RANK_TOKEN_LOSS, 10, 0, NULL, NULL, NULL, 0, scores, NT, docs, BIG, &num_docs);
    EXPECT("set_label_filter: clear", SEGINF_OK, NULL, seginf_query_set_label_filter(q, NULL, 0));
    CHECK("rank_training: outputs untouched by failures",
          kept_f64(scores, BIG) && kept_docs(docs, BIG) && num_docs == SENTINEL_SIZE);

    /* Values: the loss baseline is the index's stored CL(k,k). */
    RANK("token loss", SEGINF_OK, NULL, q, SEGINF_RANK_TOKEN_LOSS, 10, 0, NULL, NULL, NULL, 0,
         scores, NT, docs, BIG, &num_docs);
    seginf_index_token_stats(index, SEGINF_TOKEN_LOSS, stats, NT);
    ok = num_docs == NS && kept_f64(scores + NT, BIG - NT) && kept_docs(docs + NS, BIG - NS);
    for (k = 0; k < NT; k++) ok = ok && scores[k] == stats[k];
    CHECK("token loss: N scores equal to the stored losses, 3 documents, nothing past them", ok);
    ok = 1;
    for (k = 0; k + 1 < NS; k++) ok = ok && docs[k].mean >= docs[k + 1].mean;
    for (k = 0; k < NS; k++) ok = ok && docs[k].max >= docs[k].mean && docs[k].items > 0;
    CHECK("token loss: documents by descending mean, max >= mean", ok);

    /* Values: segment influence is the mean of the top 2 influences on the 7 clean tokens. */
    for (t = 0; t < 7; t++) {
        size_t seq = t < 4 ? 0 : 1, at = t < 4 ? t : t - 4;
        const float *sx = x + (seq == 0 ? 0 : 4 * D);
        const uint32_t *sy = y + (seq == 0 ? 0 : 4);
        if (seginf_query_scores(q, sx, lengths[seq], sy, at, at, per_clean[t], NT) != SEGINF_OK)
            CHECK("query_scores (fixture)", 0);
    }
    RANK("segment influence, top 2, docs skipped", SEGINF_OK, NULL, q,
         SEGINF_RANK_SEGMENT_INFLUENCE, 2, 0, x, y, lengths, 2, scores, NT, NULL, 0, &num_docs);
    ok = num_docs == NS;
    for (k = 0; k < NT; k++) {
        for (t = 0; t < 7; t++) column[t] = per_clean[t][k];
        want = top_mean(column, 7, 2);
        ok = ok && fabs(scores[k] - want) <= 1e-9 * (fabs(want) + 1e-12);
    }
    CHECK("segment influence: each token's score = mean of its 2 largest query_scores", ok);
    RANK("instance influence, token scores skipped", SEGINF_OK, NULL, q,
         SEGINF_RANK_INSTANCE_INFLUENCE, 10, 0, x, y, lengths, 2, NULL, 0, docs, NS, &num_docs);
    CHECK("instance influence: one item per document (one sequence each)",
          num_docs == NS && docs[0].items == 1 && docs[NS - 1].items == 1);
#undef RANK
    seginf_query_free(q);
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : ".";
    seginf_crf *crf = NULL, *other_crf = NULL;
    seginf_index *index = NULL;

    if (seginf_crf_new(C, D, WEIGHTS, BIAS, TRANSITIONS, START, END, &crf) != SEGINF_OK ||
        seginf_crf_new(C, D, OTHER_WEIGHTS, BIAS, TRANSITIONS, START, END, &other_crf) !=
            SEGINF_OK) {
        fprintf(stderr, "index_null_args: cannot build the fixtures\n");
        return 2;
    }
    g_crf = crf;

    check_index_options();
    check_builder_new_and_finish(crf);
    check_builder_add(crf);
    check_builder_add_batch(crf);
    index = build_index(crf);
    if (index != NULL) {
        check_index_getters(index);
        check_save_and_open(dir, crf, other_crf, index);
        check_query_setters(index);
        check_query_run_and_scores(index);
        check_query_run_batch(index);
        check_rank_training(index);
    }

    seginf_index_free(index);
    seginf_crf_free(other_crf);
    seginf_crf_free(crf);
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
