/*
 * index_query.c -- a C user of the seginf index and queries: build a token-gradient index over
 * a small training set (one sequence at a time and in a batch, with a progress callback),
 * save it, free it, reopen it memory-mapped, and ask which training tokens support or oppose
 * the labels of test segments: single tokens and a 2-token entity, whole training sequences
 * (instance influence), nearest neighbours, gradient-norm normalisation, label and document
 * filters, a batch of segments, and every training token's score. Also shows a build cancelled
 * from the progress callback.
 *
 * Output: one result per line, "key value value ...", floating point as %.17g so that it reads
 * back exactly; a hit prints as "doc_id position label score". tests/c_abi.rs rebuilds the same
 * model, training set and queries through the Rust API and checks every line.
 *
 * Parameters and features are small dyadic rationals (k / 8, k / 4) from integer formulas, so
 * they are exact in float and the Rust test reproduces them bit for bit. The model has no -inf
 * scores, so every gold labelling is feasible.
 *
 * Usage: index_query [scratch-dir]   (the index is saved there as index_query.seginf; default ".")
 */

#include "seginf.h"

#include <stdio.h>
#include <stdlib.h>

#define C 4  /* labels: O, B-ENT, I-ENT, B-OTHER */
#define D 5  /* feature dimension */
#define S 12 /* training sequences */
#define S_ONE_BY_ONE 5 /* added with seginf_index_builder_add; the rest in one batch */
#define MAX_LEN 7
#define K 5 /* hits per end for token-level queries */
#define K_INSTANCE 3
#define NUM_SEGMENTS 3

/* (k - offset) / denominator: the parameters are small dyadic rationals (see the top). */
static float dyadic(size_t k, int offset, float denominator) {
    return (float)((int)k - offset) / denominator;
}

/* Prints the status and message of a failed call to stderr; returns nonzero on failure. */
static int failed(seginf_status status, const char *what) {
    char message[512];
    if (status == SEGINF_OK) {
        return 0;
    }
    seginf_last_error_message(message, sizeof message, NULL);
    fprintf(stderr, "index_query: %s failed: %s: %s\n", what, seginf_status_name(status),
            message);
    return 1;
}

/* Jumps to `done` (which frees everything) when a call fails. */
#define CHECK(call)                  \
    do {                             \
        if (failed((call), #call)) { \
            goto done;               \
        }                            \
    } while (0)

/* ---- the training and test data ------------------------------------------------------- */

static size_t train_length(size_t i) { return 3 + (3 * i) % 5; } /* 3..7 tokens */

static float train_feature(size_t i, size_t t, size_t j) {
    return dyadic((i * 7 + t * 5 + j * 3 + i * t + 1) % 17, 8, 4.0f);
}

static uint32_t train_label(size_t i, size_t t) {
    return (uint32_t)((i + 2 * t + (i * t) % 3) % C);
}

#define TEST_SEQS 2
static const size_t TEST_LENGTHS[TEST_SEQS] = {6, 5};
/* O B-ENT I-ENT O B-OTHER O | B-ENT I-ENT I-ENT O B-OTHER */
static const uint32_t TEST_LABELS[6 + 5] = {0, 1, 2, 0, 3, 0, 1, 2, 2, 0, 3};

static float test_feature(size_t s, size_t t, size_t j) {
    return dyadic((s * 11 + t * 3 + j * 7 + s * t + 4) % 15, 7, 4.0f);
}

/* ---- printing ------------------------------------------------------------------------- */

static void print_doubles(const char *key, const double *values, size_t count) {
    size_t i;
    printf("%s", key);
    for (i = 0; i < count; i++) {
        printf(" %.17g", values[i]);
    }
    printf("\n");
}

static void print_hits(const char *key, const char *end, const seginf_hit *hits, size_t count) {
    size_t i;
    printf("%s_%s", key, end);
    for (i = 0; i < count; i++) {
        printf(" %llu %u %u %.17g", (unsigned long long)hits[i].doc_id,
               (unsigned)hits[i].position, (unsigned)hits[i].label, hits[i].score);
    }
    printf("\n");
}

/* Runs `query` on segment [first, last] of a test sequence and prints "<key>_found",
 * "<key>_supporting" and "<key>_opposing". */
static seginf_status run_and_print(seginf_query *query, const char *key, const float *features,
                                   size_t n, const uint32_t *labels, size_t first, size_t last,
                                   size_t k) {
    seginf_hit supporting[K], opposing[K];
    size_t found = 0;
    seginf_status status;
    if (k > K) {
        return SEGINF_ERR_INVALID_ARGUMENT;
    }
    status = seginf_query_run(query, features, n, labels, first, last, supporting, opposing, k,
                              &found);
    if (status != SEGINF_OK) {
        return status;
    }
    printf("%s_found %zu\n", key, found);
    print_hits(key, "supporting", supporting, found);
    print_hits(key, "opposing", opposing, found);
    return SEGINF_OK;
}

/* ---- progress callbacks --------------------------------------------------------------- */

struct progress {
    unsigned calls;
    unsigned long long last_done, last_total;
    unsigned cancel_at; /* 0: never cancel; otherwise cancel on this call */
};

static int32_t on_progress(uint64_t done, uint64_t total, void *user) {
    struct progress *p = user;
    p->calls++;
    p->last_done = (unsigned long long)done;
    p->last_total = (unsigned long long)total;
    return p->cancel_at != 0 && p->calls >= p->cancel_at;
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : ".";
    char path[4096];
    float weights[C * D], bias[C], transitions[C * C], start[C], end[C];
    float train_x[S * MAX_LEN * D], test_x[(6 + 5) * D];
    uint32_t train_y[S * MAX_LEN];
    uint64_t doc_ids[S];
    size_t lengths[S], offsets[S + 1];
    seginf_crf *crf = NULL;
    seginf_index_options *opts = NULL, *cancel_opts = NULL;
    seginf_index_builder *builder = NULL, *cancelled = NULL;
    seginf_index *built = NULL, *index = NULL;
    seginf_query *query = NULL;
    struct progress progress = {0, 0, 0, 0}, cancel_progress = {0, 0, 0, 2};
    double *stats = NULL, *scores = NULL;
    const float *test0, *test1;
    const uint32_t *test0_y, *test1_y;
    /* The batch: one token of test 0, the entity of test 0, the first three tokens of test 1. */
    const size_t seg_seq[NUM_SEGMENTS] = {0, 0, 1}, seg_first[NUM_SEGMENTS] = {0, 1, 0},
                 seg_last[NUM_SEGMENTS] = {0, 2, 2};
    seginf_hit batch_supporting[NUM_SEGMENTS * K], batch_opposing[NUM_SEGMENTS * K];
    size_t batch_found[NUM_SEGMENTS];
    const uint32_t filter_labels[2] = {0, 3};
    const uint64_t excluded_doc = 106; /* holds the entity's strongest supporter */
    size_t i, t, j, num_tokens, num_items, before, after;
    uint64_t doc;
    uint32_t position, label;
    seginf_status status;
    char message[512], key[64];
    int exit_code = 1;

    for (i = 0; i < C; i++) {
        for (j = 0; j < D; j++) {
            weights[i * D + j] = dyadic((i * 7 + j * 3 + 2) % 11, 5, 8.0f);
        }
        for (j = 0; j < C; j++) {
            transitions[i * C + j] = dyadic((i * 5 + j * 3 + 1) % 9, 4, 8.0f);
        }
        bias[i] = dyadic((i * 5 + 1) % 4, 2, 8.0f);
        start[i] = dyadic((2 * i + 1) % 5, 2, 8.0f);
        end[i] = dyadic((3 * i + 2) % 5, 2, 8.0f);
    }
    offsets[0] = 0;
    for (i = 0; i < S; i++) {
        doc_ids[i] = 100 + i;
        lengths[i] = train_length(i);
        offsets[i + 1] = offsets[i] + lengths[i];
        for (t = 0; t < lengths[i]; t++) {
            train_y[offsets[i] + t] = train_label(i, t);
            for (j = 0; j < D; j++) {
                train_x[(offsets[i] + t) * D + j] = train_feature(i, t, j);
            }
        }
    }
    for (i = 0, t = 0; i < TEST_SEQS; t += TEST_LENGTHS[i], i++) {
        size_t u;
        for (u = 0; u < TEST_LENGTHS[i]; u++) {
            for (j = 0; j < D; j++) {
                test_x[(t + u) * D + j] = test_feature(i, u, j);
            }
        }
    }
    test0 = test_x;
    test0_y = TEST_LABELS;
    test1 = test_x + TEST_LENGTHS[0] * D;
    test1_y = TEST_LABELS + TEST_LENGTHS[0];
    snprintf(path, sizeof path, "%s/index_query.seginf", dir);

    CHECK(seginf_crf_new(C, D, weights, bias, transitions, start, end, &crf));

    /* Build: f32 storage, the total announced for the progress callback. */
    CHECK(seginf_index_options_new(&opts));
    CHECK(seginf_index_options_set_storage(opts, SEGINF_STORAGE_F32));
    CHECK(seginf_index_options_set_expected_tokens(opts, offsets[S]));
    CHECK(seginf_index_options_set_progress(opts, on_progress, &progress));
    CHECK(seginf_index_builder_new(crf, opts, &builder));
    seginf_index_options_free(opts); /* the builder copied it */
    opts = NULL;
    for (i = 0; i < S_ONE_BY_ONE; i++) {
        CHECK(seginf_index_builder_add(builder, doc_ids[i], train_x + offsets[i] * D, lengths[i],
                                       train_y + offsets[i]));
    }
    printf("tokens_one_by_one %zu\n", seginf_index_builder_num_tokens(builder));
    CHECK(seginf_index_builder_add_batch(builder, doc_ids + S_ONE_BY_ONE,
                                         train_x + offsets[S_ONE_BY_ONE] * D,
                                         train_y + offsets[S_ONE_BY_ONE], lengths + S_ONE_BY_ONE,
                                         S - S_ONE_BY_ONE));
    printf("tokens_built %zu\n", seginf_index_builder_num_tokens(builder));
    printf("progress %u %llu %llu\n", progress.calls, progress.last_done, progress.last_total);
    status = seginf_index_builder_finish(builder, &built);
    builder = NULL; /* consumed, on success and on error alike */
    CHECK(status);

    /* Save, free, reopen memory-mapped. */
    CHECK(seginf_index_save(built, path));
    seginf_index_free(built);
    built = NULL;
    CHECK(seginf_index_open(path, crf, &index));
    num_tokens = seginf_index_num_tokens(index);
    printf("reopened %zu %zu %d\n", num_tokens, seginf_index_num_sequences(index),
           (int)seginf_index_storage(index));

    printf("token_ids");
    for (i = 0; i < num_tokens; i++) {
        CHECK(seginf_index_token(index, i, &doc, &position, &label));
        printf(" %llu %u %u", (unsigned long long)doc, (unsigned)position, (unsigned)label);
    }
    printf("\n");
    stats = malloc(num_tokens * sizeof *stats);
    scores = malloc(num_tokens * sizeof *scores);
    if (stats == NULL || scores == NULL) {
        fprintf(stderr, "index_query: out of memory\n");
        goto done;
    }
    CHECK(seginf_index_token_stats(index, SEGINF_TOKEN_LOSS, stats, num_tokens));
    print_doubles("token_loss", stats, num_tokens);
    CHECK(seginf_index_token_stats(index, SEGINF_TOKEN_ENTROPY, stats, num_tokens));
    print_doubles("token_entropy", stats, num_tokens);
    CHECK(seginf_index_token_stats(index, SEGINF_TOKEN_GRAD_NORM, stats, num_tokens));
    print_doubles("token_grad_norm", stats, num_tokens);

    /* One query handle, its settings changed between runs. */
    CHECK(seginf_query_new(index, &query));
    printf("num_items_token %zu\n", seginf_query_num_items(query));
    CHECK(run_and_print(query, "token_single", test0, TEST_LENGTHS[0], test0_y, 3, 3, K));
    CHECK(run_and_print(query, "token_entity", test0, TEST_LENGTHS[0], test0_y, 1, 2, K));

    CHECK(seginf_query_set_granularity(query, SEGINF_GRANULARITY_INSTANCE));
    printf("num_items_instance %zu\n", seginf_query_num_items(query));
    CHECK(run_and_print(query, "instance", test0, TEST_LENGTHS[0], test0_y, 1, 2, K_INSTANCE));

    CHECK(seginf_query_set_granularity(query, SEGINF_GRANULARITY_NEAREST_COSINE));
    CHECK(run_and_print(query, "nearest_cosine", test0, TEST_LENGTHS[0], test0_y, 1, 2, K));

    CHECK(seginf_query_set_granularity(query, SEGINF_GRANULARITY_TOKEN));
    CHECK(seginf_query_set_normalization(query, SEGINF_NORMALIZATION_GRADIENT_NORM));
    CHECK(run_and_print(query, "gradient_norm", test0, TEST_LENGTHS[0], test0_y, 1, 2, K));

    CHECK(seginf_query_set_normalization(query, SEGINF_NORMALIZATION_NONE));
    CHECK(seginf_query_set_label_filter(query, filter_labels, 2));
    CHECK(seginf_query_set_excluded_docs(query, &excluded_doc, 1));
    CHECK(run_and_print(query, "filtered", test0, TEST_LENGTHS[0], test0_y, 1, 2, K));

    /* Filters off again; three segments of two test sequences in one pass. */
    CHECK(seginf_query_set_label_filter(query, NULL, 0));
    CHECK(seginf_query_set_excluded_docs(query, NULL, 0));
    CHECK(seginf_query_run_batch(query, test_x, TEST_LABELS, TEST_LENGTHS, TEST_SEQS, seg_seq,
                                 seg_first, seg_last, NUM_SEGMENTS, batch_supporting,
                                 batch_opposing, K, batch_found));
    for (i = 0; i < NUM_SEGMENTS; i++) {
        sprintf(key, "batch_%zu", i);
        printf("%s_found %zu\n", key, batch_found[i]);
        print_hits(key, "supporting", batch_supporting + i * K, batch_found[i]);
        print_hits(key, "opposing", batch_opposing + i * K, batch_found[i]);
    }

    /* Every training token's score, then with the Hessian damped (scores / damping). */
    num_items = seginf_query_num_items(query);
    CHECK(seginf_query_scores(query, test1, TEST_LENGTHS[1], test1_y, 0, 2, scores, num_items));
    print_doubles("scores", scores, num_items);
    CHECK(seginf_query_set_hessian(query, SEGINF_HESSIAN_IDENTITY, 0.5));
    CHECK(seginf_query_scores(query, test1, TEST_LENGTHS[1], test1_y, 0, 2, scores, num_items));
    print_doubles("scores_damped", scores, num_items);

    /* A build cancelled by its progress callback: the second report returns non-zero, and
     * none of that batch is added. */
    CHECK(seginf_index_options_new(&cancel_opts));
    CHECK(seginf_index_options_set_progress(cancel_opts, on_progress, &cancel_progress));
    CHECK(seginf_index_builder_new(crf, cancel_opts, &cancelled));
    CHECK(seginf_index_builder_add(cancelled, doc_ids[0], train_x, lengths[0], train_y));
    before = seginf_index_builder_num_tokens(cancelled);
    status = seginf_index_builder_add_batch(cancelled, doc_ids + 1, train_x + offsets[1] * D,
                                            train_y + offsets[1], lengths + 1, 3);
    seginf_last_error_message(message, sizeof message, NULL);
    after = seginf_index_builder_num_tokens(cancelled);
    printf("cancel_status %s\n", seginf_status_name(status));
    printf("cancel_message %s\n", message);
    printf("cancel_tokens %zu %zu\n", before, after);
    printf("cancel_progress_calls %u\n", cancel_progress.calls);
    if (status != SEGINF_ERR_CANCELLED) {
        fprintf(stderr, "index_query: the cancelled build returned %s\n",
                seginf_status_name(status));
        goto done;
    }

    exit_code = 0;
done:
    seginf_query_free(query);
    seginf_index_free(index);
    seginf_index_free(built);
    seginf_index_builder_free(cancelled);
    seginf_index_builder_free(builder);
    seginf_index_options_free(cancel_opts);
    seginf_index_options_free(opts);
    seginf_crf_free(crf);
    free(scores);
    free(stats);
    return exit_code;
}
