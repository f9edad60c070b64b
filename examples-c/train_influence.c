/*
 * train_influence.c -- a C user of seginf's training and Hessian modes: label a synthetic
 * training set with a teacher CRF, train a student CRF on it (L-BFGS, with a progress
 * callback and a partially labelled sequence), fit K-FAC, EK-FAC and exact curvatures at the
 * trained model, ask an index of the training data which training tokens support or oppose a
 * test segment under each Hessian, and check a few of those influences against the ground
 * truth: retraining without the training token's label (seginf_exact_influence). Also shows a
 * warm start, a run cancelled from the progress callback and one stopped by the iteration cap.
 *
 * Output: one result per line, "key value value ...", floating point as %.17g so that it reads
 * back exactly. tests/c_abi.rs recomputes every line through the Rust API.
 *
 * The teacher's parameters and all features are small dyadic rationals (k / 8, k / 4) from
 * integer formulas, so they are exact in float and the Rust test reproduces them bit for bit.
 * The teacher and the student forbid O -> I (-inf), so the student keeps that constraint.
 *
 * Usage: train_influence
 */

#include "seginf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define C 3        /* labels: O, B, I */
#define D 4        /* feature dimension */
#define S 12       /* training sequences */
#define MAX_LEN 7  /* tokens per training sequence: 4..7 */
#define PARTIAL 11 /* the training sequence with an unlabelled token (not indexed) */
#define UNLABELLED_AT 2
#define TEST_N 6
#define TEST_FIRST 2
#define TEST_LAST 3
#define K 3 /* hits per end */
#define REMOVALS 3

static const char *const PROGRAM = "train_influence";

/* (k - offset) / denominator: exact small rationals (see the top). */
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
    fprintf(stderr, "%s: %s failed: %s: %s\n", PROGRAM, what, seginf_status_name(status),
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

/* Checks that a call fails with `want` and prints "<key> STATUS message"; jumps to `done`
 * otherwise. */
#define EXPECT_STATUS(key, want, call)                                                   \
    do {                                                                                 \
        char message_[512];                                                              \
        seginf_status got_ = (call);                                                     \
        if (got_ != (want)) {                                                            \
            fprintf(stderr, "%s: %s returned %s, expected %s\n", PROGRAM, #call,         \
                    seginf_status_name(got_), seginf_status_name(want));                 \
            goto done;                                                                   \
        }                                                                                \
        seginf_last_error_message(message_, sizeof message_, NULL);                      \
        printf("%s %s %s\n", (key), seginf_status_name(got_), message_);                 \
    } while (0)

/* ---- the data ----------------------------------------------------------------------------- */

static size_t train_length(size_t i) { return 4 + (3 * i) % 4; }

static float train_feature(size_t i, size_t t, size_t j) {
    return dyadic((i * 7 + t * 5 + j * 3 + i * t + 1) % 17, 8, 4.0f);
}

static float test_feature(size_t t, size_t j) { return dyadic((t * 7 + j * 5 + 3) % 13, 6, 4.0f); }

/* ---- printing ------------------------------------------------------------------------------ */

static void print_doubles(const char *key, const double *values, size_t count) {
    size_t i;
    printf("%s", key);
    for (i = 0; i < count; i++) {
        printf(" %.17g", values[i]);
    }
    printf("\n");
}

static void print_labels(const char *key, const uint32_t *labels, size_t count) {
    size_t i;
    printf("%s", key);
    for (i = 0; i < count; i++) {
        printf(" %u", (unsigned)labels[i]);
    }
    printf("\n");
}

static void print_hits(const char *key, const seginf_hit *hits, size_t count) {
    size_t i;
    printf("%s", key);
    for (i = 0; i < count; i++) {
        printf(" %llu %u %u %.17g", (unsigned long long)hits[i].doc_id,
               (unsigned)hits[i].position, (unsigned)hits[i].label, hits[i].score);
    }
    printf("\n");
}

/* ---- the progress callback ---------------------------------------------------------------- */

struct progress {
    unsigned calls;
    unsigned long long last_iteration;
    double last_objective, last_gradient;
    unsigned cancel_at; /* 0: never cancel; otherwise cancel on this call */
};

static int32_t on_progress(uint64_t iteration, double objective, double max_abs_gradient,
                           void *user) {
    struct progress *p = user;
    p->calls++;
    p->last_iteration = (unsigned long long)iteration;
    p->last_objective = objective;
    p->last_gradient = max_abs_gradient;
    return p->cancel_at != 0 && p->calls >= p->cancel_at;
}

int main(void) {
    float weights[C * D], bias[C], transitions[C * C], start[C], end[C];
    float zeros_w[C * D] = {0}, zeros_c[C] = {0}, student_transitions[C * C] = {0};
    float train_x[S * MAX_LEN * D], test_x[TEST_N * D];
    uint32_t train_y[S * MAX_LEN], test_y[TEST_N];
    uint8_t observed[MAX_LEN];
    size_t lengths[S], offsets[S + 1];
    seginf_crf *teacher = NULL, *student = NULL, *trained = NULL, *warm = NULL,
               *unused = NULL;
    seginf_trainer *trainer = NULL;
    seginf_curvature *kfac = NULL, *ekfac = NULL, *exact = NULL;
    seginf_index_builder *builder = NULL;
    seginf_index *index = NULL;
    seginf_query *query = NULL;
    struct progress progress = {0, 0, 0.0, 0.0, 0}, cancel = {0, 0, 0.0, 0.0, 3};
    double objective = 0, gradient = 0, residual = 0, actual = 0, predicted = 0;
    double *params = NULL, *scores = NULL;
    size_t iterations = 0, cg_iterations = 0, num_params, num_items, found = 0, i, t, j;
    seginf_hit supporting[K], opposing[K];
    /* Training tokens whose labels are removed: (sequence, position). */
    const size_t removed[REMOVALS][2] = {{0, 1}, {5, 0}, {9, 2}};
    char key[64];
    int exit_code = 1;

    /* The teacher: O -> I forbidden. */
    for (i = 0; i < C; i++) {
        for (j = 0; j < D; j++) {
            weights[i * D + j] = dyadic((i * 5 + j * 3 + 1) % 9, 4, 4.0f);
        }
        for (j = 0; j < C; j++) {
            transitions[i * C + j] = dyadic((i * 7 + j * 3 + 2) % 7, 3, 4.0f);
        }
        bias[i] = dyadic((i * 2 + 3) % 5, 2, 4.0f);
        start[i] = dyadic((2 * i + 1) % 3, 1, 4.0f);
        end[i] = dyadic((i + 2) % 3, 1, 8.0f);
    }
    transitions[0 * C + 2] = -INFINITY;
    student_transitions[0 * C + 2] = -INFINITY;
    CHECK(seginf_crf_new(C, D, weights, bias, transitions, start, end, &teacher));
    /* The student starts from zeros, with the same constraint and blocks. */
    CHECK(seginf_crf_new(C, D, zeros_w, zeros_c, student_transitions, zeros_c, zeros_c,
                         &student));

    /* Training labels: the teacher's Viterbi path, with position 1 of every fourth sequence
     * relabelled B (label noise; B may follow and precede anything, so it stays feasible). */
    offsets[0] = 0;
    for (i = 0; i < S; i++) {
        lengths[i] = train_length(i);
        offsets[i + 1] = offsets[i] + lengths[i];
        for (t = 0; t < lengths[i]; t++) {
            for (j = 0; j < D; j++) {
                train_x[(offsets[i] + t) * D + j] = train_feature(i, t, j);
            }
        }
        CHECK(seginf_crf_viterbi(teacher, train_x + offsets[i] * D, lengths[i],
                                 train_y + offsets[i], NULL));
        if (i % 4 == 1) {
            train_y[offsets[i] + 1] = 1;
        }
    }
    print_labels("train_labels", train_y, offsets[S]);
    for (t = 0; t < TEST_N; t++) {
        for (j = 0; j < D; j++) {
            test_x[t * D + j] = test_feature(t, j);
        }
    }
    CHECK(seginf_crf_viterbi(teacher, test_x, TEST_N, test_y, NULL));
    test_y[TEST_FIRST] = 1; /* a test label the teacher would not give */
    print_labels("test_labels", test_y, TEST_N);

    /* The trainer: every sequence labelled except one token of the last, whose label value
     * is then ignored (an out-of-range value shows it). */
    CHECK(seginf_trainer_new(student, &trainer));
    for (i = 0; i < S; i++) {
        if (i == PARTIAL) {
            for (t = 0; t < lengths[i]; t++) {
                observed[t] = t != UNLABELLED_AT;
            }
            train_y[offsets[i] + UNLABELLED_AT] = 77;
            CHECK(seginf_trainer_add(trainer, train_x + offsets[i] * D, lengths[i],
                                     train_y + offsets[i], observed));
        } else {
            CHECK(seginf_trainer_add(trainer, train_x + offsets[i] * D, lengths[i],
                                     train_y + offsets[i], NULL));
        }
    }
    printf("num_sequences %zu\n", seginf_trainer_num_sequences(trainer));
    CHECK(seginf_trainer_set_l2(trainer, 1.0 / 32));
    CHECK(seginf_trainer_set_tolerance(trainer, 1e-9));
    CHECK(seginf_trainer_set_max_iterations(trainer, 500));
    CHECK(seginf_trainer_set_progress(trainer, on_progress, &progress));
    CHECK(seginf_trainer_run(trainer, &trained, &objective, &gradient, &iterations));
    printf("objective %.17g\n", objective);
    printf("max_abs_gradient %.17g\n", gradient);
    printf("iterations %zu\n", iterations);
    printf("progress %u %llu %.17g %.17g\n", progress.calls, progress.last_iteration,
           progress.last_objective, progress.last_gradient);
    num_params = seginf_crf_num_params(trained);
    params = malloc(num_params * sizeof *params);
    if (params == NULL) {
        fprintf(stderr, "%s: out of memory\n", PROGRAM);
        goto done;
    }
    CHECK(seginf_crf_get_params(trained, params, num_params));
    print_doubles("trained_params", params, num_params);

    /* Curvatures at the trained model, undamped (l2 = 1/32 keeps them positive definite). */
    CHECK(seginf_curvature_fit(trainer, trained, SEGINF_HESSIAN_KFAC, 0.0, &kfac));
    CHECK(seginf_curvature_fit(trainer, trained, SEGINF_HESSIAN_EKFAC, 0.0, &ekfac));
    CHECK(seginf_curvature_fit(trainer, trained, SEGINF_HESSIAN_EXACT, 0.0, &exact));
    printf("curvature_modes %d %d %d\n", (int)seginf_curvature_mode(kfac),
           (int)seginf_curvature_mode(ekfac), (int)seginf_curvature_mode(exact));

    /* An index of the fully labelled training sequences; doc id = sequence number. */
    CHECK(seginf_index_builder_new(trained, NULL, &builder));
    for (i = 0; i < S; i++) {
        if (i != PARTIAL) {
            CHECK(seginf_index_builder_add(builder, i, train_x + offsets[i] * D, lengths[i],
                                           train_y + offsets[i]));
        }
    }
    {
        seginf_status status = seginf_index_builder_finish(builder, &index);
        builder = NULL; /* consumed, on success and on error alike */
        CHECK(status);
    }
    CHECK(seginf_query_new(index, &query));
    num_items = seginf_query_num_items(query);
    scores = malloc(num_items * sizeof *scores);
    if (scores == NULL) {
        fprintf(stderr, "%s: out of memory\n", PROGRAM);
        goto done;
    }

    /* Every training token's influence on the test segment, under each Hessian. */
    CHECK(seginf_query_scores(query, test_x, TEST_N, test_y, TEST_FIRST, TEST_LAST, scores,
                              num_items));
    print_doubles("scores_identity", scores, num_items);
    CHECK(seginf_query_set_curvature(query, kfac));
    CHECK(seginf_query_scores(query, test_x, TEST_N, test_y, TEST_FIRST, TEST_LAST, scores,
                              num_items));
    print_doubles("scores_kfac", scores, num_items);
    CHECK(seginf_query_set_curvature(query, ekfac));
    CHECK(seginf_query_scores(query, test_x, TEST_N, test_y, TEST_FIRST, TEST_LAST, scores,
                              num_items));
    print_doubles("scores_ekfac", scores, num_items);
    CHECK(seginf_query_set_curvature(query, exact));
    CHECK(seginf_query_scores(query, test_x, TEST_N, test_y, TEST_FIRST, TEST_LAST, scores,
                              num_items));
    print_doubles("scores_exact", scores, num_items);
    CHECK(seginf_curvature_last_solve(exact, &cg_iterations, &residual));
    printf("exact_last_solve %zu %.17g\n", cg_iterations, residual);
    CHECK(seginf_query_run(query, test_x, TEST_N, test_y, TEST_FIRST, TEST_LAST, supporting,
                           opposing, K, &found));
    printf("exact_found %zu\n", found);
    print_hits("exact_supporting", supporting, found);
    print_hits("exact_opposing", opposing, found);
    /* Back to the identity, damped. */
    CHECK(seginf_query_set_hessian(query, SEGINF_HESSIAN_IDENTITY, 2.0));
    CHECK(seginf_query_scores(query, test_x, TEST_N, test_y, TEST_FIRST, TEST_LAST, scores,
                              num_items));
    print_doubles("scores_identity_damped", scores, num_items);

    /* The ground truth: retrain without each removed label; the prediction beside it. */
    for (i = 0; i < REMOVALS; i++) {
        const size_t seq = removed[i][0], pos = removed[i][1];
        const seginf_curvature *const modes[4] = {NULL, kfac, ekfac, exact};
        const char *const names[4] = {"identity", "kfac", "ekfac", "exact"};
        size_t m;
        for (m = 0; m < 4; m++) {
            CHECK(seginf_exact_influence(trainer, trained, modes[m], seq, pos, pos, test_x,
                                         TEST_N, test_y, TEST_FIRST, TEST_LAST, &actual,
                                         &predicted));
            sprintf(key, "influence_%s_%zu_%zu", names[m], seq, pos);
            printf("%s %.17g %.17g\n", key, actual, predicted);
        }
    }

    /* A warm start from the trained model converges at once. */
    progress.calls = 0;
    CHECK(seginf_trainer_set_init(trainer, trained));
    CHECK(seginf_trainer_run(trainer, &warm, NULL, NULL, &iterations));
    printf("warm_iterations %zu %u\n", iterations, progress.calls);

    /* Cancelled by the callback on its third call; stopped by an iteration cap of 1. */
    CHECK(seginf_trainer_set_init(trainer, student));
    CHECK(seginf_trainer_set_progress(trainer, on_progress, &cancel));
    EXPECT_STATUS("cancel", SEGINF_ERR_CANCELLED,
                  seginf_trainer_run(trainer, &unused, NULL, NULL, NULL));
    printf("cancel_calls %u\n", cancel.calls);
    CHECK(seginf_trainer_set_progress(trainer, NULL, NULL));
    CHECK(seginf_trainer_set_max_iterations(trainer, 1));
    EXPECT_STATUS("capped", SEGINF_ERR_NOT_CONVERGED,
                  seginf_trainer_run(trainer, &unused, NULL, NULL, NULL));
    if (unused != NULL) {
        fprintf(stderr, "%s: a failed run wrote its output\n", PROGRAM);
        goto done;
    }

    exit_code = 0;
done:
    seginf_query_free(query);
    seginf_index_free(index);
    seginf_index_builder_free(builder);
    seginf_curvature_free(exact);
    seginf_curvature_free(ekfac);
    seginf_curvature_free(kfac);
    seginf_trainer_free(trainer);
    seginf_crf_free(unused);
    seginf_crf_free(warm);
    seginf_crf_free(trained);
    seginf_crf_free(student);
    seginf_crf_free(teacher);
    free(scores);
    free(params);
    return exit_code;
}
