/*
 * train_null_args.c -- every seginf training, curvature and exact-influence entry point fed bad
 * input: NULL for each pointer in turn, n = 0, lengths that overflow, misaligned buffers,
 * labels >= C at labelled tokens (and accepted at unlabelled ones), NaN/inf features, labels
 * the -inf constraints forbid, bad option values (l2, tolerance, damping), unknown and
 * unfitted Hessian modes, CRFs of another shape, curvatures fitted at another CRF (on a query
 * and for exact influence), bad segments, a cancelled run, and runs stopped by the iteration
 * cap (DESIGN.md section 4: "NULL pointers and bad lengths are errors, not undefined
 * behaviour"; "outputs are written only on success").
 *
 * For each failing call it checks the exact status, that seginf_last_error_message() gives a
 * fresh, non-empty message (and, where useful, that it names the argument), and that outputs
 * and handles, pre-filled with sentinels, are untouched; for the trainer, that nothing was
 * added. Run under AddressSanitizer + UBSan by tests/c_abi.rs, so a crash, an out-of-bounds
 * access or a leak also fails.
 *
 * Prints one line per check and a final "N passed, M failed"; exits nonzero on any failure.
 * Usage: train_null_args
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

/* ---- fixtures -------------------------------------------------------------------------- */

#define C 3 /* O, B-X, I-X */
#define D 2
#define NS 4  /* training sequences */
#define NT 12 /* training tokens: 4 + 3 + 2 + 3 */
#define BIG 64

static const float WEIGHTS[C * D] = {0.5f, -0.25f, 0.25f, 0.5f, -0.5f, 0.25f};
static const float OTHER_WEIGHTS[C * D] = {0.5f, -0.25f, 0.25f, 0.5f, -0.5f, 0.375f};
static const float BIAS[C] = {0.125f, -0.25f, 0.0625f};
/* O -> I-X is forbidden. */
static const float TRANSITIONS[C * C] = {0.25f, 0.5f, -INFINITY, -0.125f, 0.0f,
                                         0.75f, 0.375f, -0.5f,    0.25f};
/* O -> I-X and B-X -> I-X forbidden: the training labels below become impossible. */
static const float STRICT_TRANSITIONS[C * C] = {0.25f, 0.5f,  -INFINITY, -0.125f, 0.0f,
                                                -INFINITY, 0.375f, -0.5f, 0.25f};
static const float START[C] = {0.125f, 0.25f, -0.5f};
static const float END[C] = {0.0f, -0.25f, 0.125f};

/* The training set, back to back. */
static const size_t LENGTHS[NS] = {4, 3, 2, 3};
static const size_t OFFSETS[NS] = {0, 4, 7, 9};
static const float TRAIN_X[NT * D] = {1.0f,  -0.5f, 0.25f, 0.75f, -1.0f, 0.5f,  0.0f,  2.0f,
                                      0.5f,  0.5f,  -0.25f, 1.0f, 1.5f,  -1.0f, 0.75f, 0.25f,
                                      -0.5f, 1.25f, 0.25f, -0.75f, 1.0f, 1.0f, -1.5f, 0.5f};
/* B I O O | O B I | B B | O O B */
static const uint32_t TRAIN_Y[NT] = {1, 2, 0, 0, 0, 1, 2, 1, 1, 0, 0, 1};
/* The first sequence with O -> I-X at positions 0..1: impossible under the -inf transition. */
static const uint32_t IMPOSSIBLE[4] = {0, 2, 0, 0};
static const uint8_t ALL_OBSERVED[4] = {1, 1, 1, 1};
static const uint8_t NONE_OBSERVED[4] = {0, 0, 0, 0};
/* Token 1 unlabelled (any flag value other than 0 means labelled). */
static const uint8_t SECOND_UNLABELLED[4] = {1, 0, 2, 255};

#define X(s) (TRAIN_X + OFFSETS[s] * D)
#define Y(s) (TRAIN_Y + OFFSETS[s])

/* A trainer from `init` holding the whole training set, l2 = 1/4; NULL on failure. */
static seginf_trainer *full_trainer(const seginf_crf *init) {
    seginf_trainer *t = NULL;
    size_t s;
    if (seginf_trainer_new(init, &t) != SEGINF_OK) return NULL;
    for (s = 0; s < NS; s++) {
        if (seginf_trainer_add(t, X(s), LENGTHS[s], Y(s), NULL) != SEGINF_OK) {
            seginf_trainer_free(t);
            return NULL;
        }
    }
    if (seginf_trainer_set_l2(t, 0.25) != SEGINF_OK ||
        seginf_trainer_set_tolerance(t, 1e-8) != SEGINF_OK) {
        seginf_trainer_free(t);
        return NULL;
    }
    return t;
}

/* ---- progress callbacks ----------------------------------------------------------------- */

static int32_t keep_going(uint64_t iteration, double objective, double gradient, void *user) {
    (void)iteration;
    (void)objective;
    (void)gradient;
    ++*(int *)user;
    return 0;
}

static int32_t stop(uint64_t iteration, double objective, double gradient, void *user) {
    (void)iteration;
    (void)objective;
    (void)gradient;
    ++*(int *)user;
    return -1;
}

/* ---- the checks ---------------------------------------------------------------------------- */

static void check_trainer_new_and_add(const seginf_crf *crf) {
    seginf_trainer *t = SENTINEL(seginf_trainer);
    const float *x = X(0);
    const uint32_t *y = Y(0);
    unsigned char raw_x[sizeof(float) * (4 * D + 1)], raw_y[sizeof(uint32_t) * 5];
    const float *misaligned_x = (const float *)(const void *)(raw_x + 1);
    const uint32_t *misaligned_y = (const uint32_t *)(const void *)(raw_y + 1);

    memcpy(raw_x + 1, x, sizeof(float) * 4 * D);
    memcpy(raw_y + 1, y, sizeof(uint32_t) * 4);
    seginf_trainer_free(NULL);
    CHECK("trainer_free(NULL) is a no-op", 1);
    CHECK("trainer_num_sequences(NULL) = 0", seginf_trainer_num_sequences(NULL) == 0);
    EXPECT("trainer_new: init NULL", SEGINF_ERR_NULL_ARGUMENT, "`init`",
           seginf_trainer_new(NULL, &t));
    EXPECT("trainer_new: out NULL", SEGINF_ERR_NULL_ARGUMENT, "`out`",
           seginf_trainer_new(crf, NULL));
    CHECK("trainer_new: *out untouched by failures", t == SENTINEL(seginf_trainer));
    EXPECT("trainer_new", SEGINF_OK, NULL, seginf_trainer_new(crf, &t));
    if (t == SENTINEL(seginf_trainer) || t == NULL) {
        CHECK("trainer_new: *out set", 0);
        return;
    }
    CHECK("trainer_new: no sequences", seginf_trainer_num_sequences(t) == 0);

    EXPECT("trainer_add: trainer NULL", SEGINF_ERR_NULL_ARGUMENT, "`trainer`",
           seginf_trainer_add(NULL, x, 4, y, NULL));
    EXPECT("trainer_add: features NULL", SEGINF_ERR_NULL_ARGUMENT, "`features`",
           seginf_trainer_add(t, NULL, 4, y, NULL));
    EXPECT("trainer_add: labels NULL", SEGINF_ERR_NULL_ARGUMENT, "`labels`",
           seginf_trainer_add(t, x, 4, NULL, NULL));
    EXPECT("trainer_add: n = 0", SEGINF_ERR_INVALID_ARGUMENT, "n = 0",
           seginf_trainer_add(t, x, 0, y, NULL));
    EXPECT("trainer_add: n = 0 with observed flags", SEGINF_ERR_INVALID_ARGUMENT, "n = 0",
           seginf_trainer_add(t, x, 0, y, ALL_OBSERVED));
    EXPECT("trainer_add: n x d overflows", SEGINF_ERR_INVALID_ARGUMENT, NULL,
           seginf_trainer_add(t, x, SIZE_MAX, y, NULL));
    EXPECT("trainer_add: n x 4 bytes overflows", SEGINF_ERR_INVALID_ARGUMENT, "too large",
           seginf_trainer_add(t, x, SIZE_MAX / 2, y, NULL));
    EXPECT("trainer_add: misaligned features", SEGINF_ERR_INVALID_ARGUMENT, "aligned",
           seginf_trainer_add(t, misaligned_x, 4, y, NULL));
    EXPECT("trainer_add: misaligned labels", SEGINF_ERR_INVALID_ARGUMENT, "aligned",
           seginf_trainer_add(t, x, 4, misaligned_y, NULL));
    EXPECT("trainer_add: label = C", SEGINF_ERR_LABEL_OUT_OF_RANGE, "labels[2]",
           seginf_trainer_add(t, x, 4, label_at(y, 4, 2, C), NULL));
    EXPECT("trainer_add: label = UINT32_MAX at a labelled token", SEGINF_ERR_LABEL_OUT_OF_RANGE,
           "labels[3]", seginf_trainer_add(t, x, 4, label_at(y, 4, 3, UINT32_MAX), ALL_OBSERVED));
    EXPECT("trainer_add: NaN feature", SEGINF_ERR_NON_FINITE, "features[1][1]",
           seginf_trainer_add(t, with_value(x, 4 * D, 3, NAN), 4, y, NULL));
    EXPECT("trainer_add: +inf feature", SEGINF_ERR_NON_FINITE, "features",
           seginf_trainer_add(t, with_value(x, 4 * D, 7, INFINITY), 4, y, NULL));
    EXPECT("trainer_add: -inf feature at an unlabelled token", SEGINF_ERR_NON_FINITE, "features",
           seginf_trainer_add(t, with_value(x, 4 * D, 2, -INFINITY), 4, y, NONE_OBSERVED));
    EXPECT("trainer_add: labels the -inf transitions forbid", SEGINF_ERR_IMPOSSIBLE_LABELS, NULL,
           seginf_trainer_add(t, x, 4, IMPOSSIBLE, NULL));
    CHECK("trainer_add: nothing added by failures", seginf_trainer_num_sequences(t) == 0);

    EXPECT("trainer_add: valid, observed NULL", SEGINF_OK, NULL,
           seginf_trainer_add(t, x, 4, y, NULL));
    EXPECT("trainer_add: valid, every flag set", SEGINF_OK, NULL,
           seginf_trainer_add(t, x, 4, y, ALL_OBSERVED));
    EXPECT("trainer_add: label = C at an unlabelled token is ignored", SEGINF_OK, NULL,
           seginf_trainer_add(t, x, 4, label_at(y, 4, 1, C), SECOND_UNLABELLED));
    EXPECT("trainer_add: the forbidden O -> I-X is fine when I-X is unlabelled", SEGINF_OK, NULL,
           seginf_trainer_add(t, x, 4, IMPOSSIBLE, SECOND_UNLABELLED));
    EXPECT("trainer_add: no labelled token at all (loss 0)", SEGINF_OK, NULL,
           seginf_trainer_add(t, x, 4, label_at(y, 4, 0, UINT32_MAX), NONE_OBSERVED));
    CHECK("trainer_add: 5 sequences", seginf_trainer_num_sequences(t) == 5);
    seginf_trainer_free(t);
}

static void check_trainer_setters(const seginf_crf *crf, const seginf_crf *other,
                                  const seginf_crf *fewer_labels, const seginf_crf *more_features,
                                  const seginf_crf *no_bias, const seginf_crf *no_end) {
    seginf_trainer *t = NULL;
    int calls = 0;

    if (seginf_trainer_new(crf, &t) != SEGINF_OK) {
        CHECK("trainer_new (fixture)", 0);
        return;
    }
    EXPECT("set_l2: trainer NULL", SEGINF_ERR_NULL_ARGUMENT, "`trainer`",
           seginf_trainer_set_l2(NULL, 0.5));
    EXPECT("set_l2: -1", SEGINF_ERR_INVALID_ARGUMENT, "l2", seginf_trainer_set_l2(t, -1.0));
    EXPECT("set_l2: -1e-300", SEGINF_ERR_INVALID_ARGUMENT, "l2",
           seginf_trainer_set_l2(t, -1e-300));
    EXPECT("set_l2: NaN", SEGINF_ERR_INVALID_ARGUMENT, "l2", seginf_trainer_set_l2(t, NAN));
    EXPECT("set_l2: +inf", SEGINF_ERR_INVALID_ARGUMENT, "l2", seginf_trainer_set_l2(t, INFINITY));
    EXPECT("set_l2: 0", SEGINF_OK, NULL, seginf_trainer_set_l2(t, 0.0));
    EXPECT("set_l2: 0.5", SEGINF_OK, NULL, seginf_trainer_set_l2(t, 0.5));

    EXPECT("set_tolerance: trainer NULL", SEGINF_ERR_NULL_ARGUMENT, "`trainer`",
           seginf_trainer_set_tolerance(NULL, 1e-6));
    EXPECT("set_tolerance: 0", SEGINF_ERR_INVALID_ARGUMENT, "tolerance",
           seginf_trainer_set_tolerance(t, 0.0));
    EXPECT("set_tolerance: -1e-6", SEGINF_ERR_INVALID_ARGUMENT, "tolerance",
           seginf_trainer_set_tolerance(t, -1e-6));
    EXPECT("set_tolerance: NaN", SEGINF_ERR_INVALID_ARGUMENT, "tolerance",
           seginf_trainer_set_tolerance(t, NAN));
    EXPECT("set_tolerance: +inf", SEGINF_ERR_INVALID_ARGUMENT, "tolerance",
           seginf_trainer_set_tolerance(t, INFINITY));
    EXPECT("set_tolerance: 1e-7", SEGINF_OK, NULL, seginf_trainer_set_tolerance(t, 1e-7));

    EXPECT("set_max_iterations: trainer NULL", SEGINF_ERR_NULL_ARGUMENT, "`trainer`",
           seginf_trainer_set_max_iterations(NULL, 10));
    EXPECT("set_max_iterations: SIZE_MAX", SEGINF_OK, NULL,
           seginf_trainer_set_max_iterations(t, SIZE_MAX));

    EXPECT("set_init: trainer NULL", SEGINF_ERR_NULL_ARGUMENT, "`trainer`",
           seginf_trainer_set_init(NULL, other));
    EXPECT("set_init: crf NULL", SEGINF_ERR_NULL_ARGUMENT, "`crf`",
           seginf_trainer_set_init(t, NULL));
    EXPECT("set_init: fewer labels", SEGINF_ERR_DIMENSION_MISMATCH, "C = 2",
           seginf_trainer_set_init(t, fewer_labels));
    EXPECT("set_init: more features", SEGINF_ERR_DIMENSION_MISMATCH, "d = 3",
           seginf_trainer_set_init(t, more_features));
    EXPECT("set_init: no bias", SEGINF_ERR_DIMENSION_MISMATCH, "bias false",
           seginf_trainer_set_init(t, no_bias));
    EXPECT("set_init: no end scores", SEGINF_ERR_DIMENSION_MISMATCH, "end false",
           seginf_trainer_set_init(t, no_end));
    EXPECT("set_init: same shape, other weights", SEGINF_OK, NULL,
           seginf_trainer_set_init(t, other));

    EXPECT("set_progress: trainer NULL", SEGINF_ERR_NULL_ARGUMENT, "`trainer`",
           seginf_trainer_set_progress(NULL, keep_going, &calls));
    EXPECT("set_progress: a callback", SEGINF_OK, NULL,
           seginf_trainer_set_progress(t, keep_going, &calls));
    EXPECT("set_progress: NULL callback removes it", SEGINF_OK, NULL,
           seginf_trainer_set_progress(t, NULL, NULL));
    seginf_trainer_free(t);
}

static void check_trainer_run(const seginf_crf *crf, const seginf_crf *strict) {
    seginf_trainer *empty = NULL, *t = full_trainer(crf);
    seginf_crf *out = SENTINEL(seginf_crf), *again = NULL;
    double objective = SENTINEL_F64, gradient = SENTINEL_F64, first_objective;
    size_t iterations = SENTINEL_SIZE;
    unsigned char raw[sizeof(double) * 2];
    double *misaligned = (double *)(void *)(raw + 1);
    int calls = 0, stops = 0;

    if (t == NULL || seginf_trainer_new(crf, &empty) != SEGINF_OK) {
        CHECK("trainer (fixture)", 0);
        seginf_trainer_free(t);
        return;
    }
#define RUN(what, want, needle, trainer, o, obj, grad, it) \
    EXPECT("trainer_run: " what, (want), (needle), seginf_trainer_run((trainer), (o), (obj), (grad), (it)))
    RUN("trainer NULL", SEGINF_ERR_NULL_ARGUMENT, "`trainer`", NULL, &out, &objective, &gradient,
        &iterations);
    RUN("out NULL", SEGINF_ERR_NULL_ARGUMENT, "`out`", t, NULL, &objective, &gradient,
        &iterations);
    RUN("misaligned objective", SEGINF_ERR_INVALID_ARGUMENT, "aligned", t, &out, misaligned,
        &gradient, &iterations);
    RUN("misaligned max_abs_gradient", SEGINF_ERR_INVALID_ARGUMENT, "aligned", t, &out,
        &objective, misaligned, &iterations);
    RUN("no sequences", SEGINF_ERR_INVALID_ARGUMENT, "no sequences", empty, &out, &objective,
        &gradient, &iterations);

    /* Cancelled by the callback at its first call (any non-zero value cancels). */
    seginf_trainer_set_progress(t, stop, &stops);
    RUN("progress callback cancels", SEGINF_ERR_CANCELLED, "progress callback", t, &out,
        &objective, &gradient, &iterations);
    CHECK("trainer_run: the callback was called once", stops == 1);
    seginf_trainer_set_progress(t, keep_going, &calls);

    /* Stopped by the iteration cap: NOT_CONVERGED, and nothing written. */
    seginf_trainer_set_max_iterations(t, 1);
    RUN("max_iterations = 1", SEGINF_ERR_NOT_CONVERGED, "seginf_trainer_set_max_iterations", t,
        &out, &objective, &gradient, &iterations);
    CHECK("trainer_run: the callback ran once before the cap", calls == 1);
    seginf_trainer_set_max_iterations(t, 0);
    RUN("max_iterations = 0 from a model that is not a minimum", SEGINF_ERR_NOT_CONVERGED,
        "iteration cap (0)", t, &out, &objective, &gradient, &iterations);
    seginf_trainer_set_max_iterations(t, 1000);

    /* A warm start whose -inf constraints forbid labels already added. */
    seginf_trainer_set_init(t, strict);
    RUN("labels the new init's constraints forbid", SEGINF_ERR_IMPOSSIBLE_LABELS, "sequence 0",
        t, &out, &objective, &gradient, &iterations);
    seginf_trainer_set_init(t, crf);
    CHECK("trainer_run: outputs untouched by failures",
          out == SENTINEL(seginf_crf) && objective == SENTINEL_F64 && gradient == SENTINEL_F64 &&
              iterations == SENTINEL_SIZE);

    calls = 0;
    RUN("valid", SEGINF_OK, NULL, t, &out, &objective, &gradient, &iterations);
    CHECK("trainer_run: every output written, callback once per step",
          out != SENTINEL(seginf_crf) && out != NULL && objective != SENTINEL_F64 &&
              gradient <= 1e-8 && iterations != SENTINEL_SIZE && iterations > 0 &&
              (size_t)calls == iterations);
    if (out != SENTINEL(seginf_crf) && out != NULL) {
        double params[BIG];
        size_t at = 0;
        int kept = seginf_crf_num_params(out) == seginf_crf_num_params(crf) &&
                   seginf_crf_num_params(out) <= BIG &&
                   seginf_crf_param_offset(out, SEGINF_PARAM_TRANSITIONS, &at) == SEGINF_OK &&
                   seginf_crf_get_params(out, params, seginf_crf_num_params(out)) == SEGINF_OK;
        CHECK("trainer_run: the trained CRF keeps the -inf constraint (O -> I-X), the rest finite",
              kept && isinf(params[at + 0 * C + 2]) && params[at + 0 * C + 2] < 0 &&
                  isfinite(params[at + 1 * C + 2]) && isfinite(params[0]));
    }
    first_objective = objective;
    RUN("valid, optional outputs NULL", SEGINF_OK, NULL, t, &again, NULL, NULL, NULL);
    seginf_crf_free(again);
    again = NULL;
    /* Starting at the minimum: converged in 0 steps, the same objective. */
    if (out != SENTINEL(seginf_crf)) {
        seginf_trainer_set_init(t, out);
        RUN("warm start at the minimum", SEGINF_OK, NULL, t, &again, &objective, NULL,
            &iterations);
        CHECK("trainer_run: warm start at the minimum takes 0 steps",
              iterations == 0 && objective == first_objective);
        seginf_crf_free(again);
        seginf_crf_free(out);
    }
#undef RUN
    seginf_trainer_free(empty);
    seginf_trainer_free(t);
}

static void check_curvature(const seginf_crf *crf, const seginf_crf *strict,
                            const seginf_crf *more_features, const seginf_trainer *t,
                            const seginf_crf *trained) {
    seginf_trainer *empty = NULL, *unregularised = NULL;
    seginf_curvature *c = SENTINEL(seginf_curvature), *kfac = NULL, *exact = NULL;
    size_t iterations = SENTINEL_SIZE;
    double residual = SENTINEL_F64;

    if (seginf_trainer_new(crf, &empty) != SEGINF_OK ||
        (unregularised = full_trainer(crf)) == NULL ||
        seginf_trainer_set_l2(unregularised, 0.0) != SEGINF_OK) {
        CHECK("trainers (fixture)", 0);
        seginf_trainer_free(empty);
        seginf_trainer_free(unregularised);
        return;
    }
    seginf_curvature_free(NULL);
    CHECK("curvature_free(NULL) is a no-op", 1);
    CHECK("curvature_mode(NULL) = -1", seginf_curvature_mode(NULL) == -1);
#define FIT(what, want, needle, data, crf_, mode, damping, out)       \
    EXPECT("curvature_fit: " what, (want), (needle),                 \
           seginf_curvature_fit((data), (crf_), (mode), (damping), (out)))
    FIT("data NULL", SEGINF_ERR_NULL_ARGUMENT, "`data`", NULL, trained, SEGINF_HESSIAN_KFAC, 0.0,
        &c);
    FIT("trained NULL", SEGINF_ERR_NULL_ARGUMENT, "`trained`", t, NULL, SEGINF_HESSIAN_KFAC, 0.0,
        &c);
    FIT("out NULL", SEGINF_ERR_NULL_ARGUMENT, "`out`", t, trained, SEGINF_HESSIAN_KFAC, 0.0, NULL);
    FIT("identity is not fitted", SEGINF_ERR_INVALID_ARGUMENT, "seginf_query_set_hessian", t,
        trained, SEGINF_HESSIAN_IDENTITY, 1.0, &c);
    FIT("mode 4 unknown", SEGINF_ERR_INVALID_ARGUMENT, "seginf_hessian", t, trained, 4, 0.0, &c);
    FIT("mode -1 unknown", SEGINF_ERR_INVALID_ARGUMENT, "seginf_hessian", t, trained, -1, 0.0, &c);
    FIT("damping -1", SEGINF_ERR_INVALID_ARGUMENT, "damping", t, trained, SEGINF_HESSIAN_KFAC,
        -1.0, &c);
    FIT("damping NaN", SEGINF_ERR_INVALID_ARGUMENT, "damping", t, trained, SEGINF_HESSIAN_EXACT,
        NAN, &c);
    FIT("damping +inf", SEGINF_ERR_INVALID_ARGUMENT, "damping", t, trained, SEGINF_HESSIAN_EKFAC,
        INFINITY, &c);
    FIT("l2 = 0 and damping 0", SEGINF_ERR_INVALID_ARGUMENT, "l2 + damping", unregularised,
        trained, SEGINF_HESSIAN_EXACT, 0.0, &c);
    FIT("no sequences", SEGINF_ERR_INVALID_ARGUMENT, "no sequences", empty, trained,
        SEGINF_HESSIAN_KFAC, 1.0, &c);
    FIT("trained of another shape", SEGINF_ERR_DIMENSION_MISMATCH, "`trained`", t, more_features,
        SEGINF_HESSIAN_KFAC, 0.0, &c);
    FIT("exact: labels trained's constraints forbid", SEGINF_ERR_IMPOSSIBLE_LABELS, NULL, t,
        strict, SEGINF_HESSIAN_EXACT, 0.0, &c);
    FIT("kfac: labels trained's constraints forbid", SEGINF_ERR_IMPOSSIBLE_LABELS, NULL, t,
        strict, SEGINF_HESSIAN_KFAC, 0.0, &c);
    CHECK("curvature_fit: *out untouched by failures", c == SENTINEL(seginf_curvature));
    FIT("l2 = 0 with damping 0.5", SEGINF_OK, NULL, unregularised, trained, SEGINF_HESSIAN_EKFAC,
        0.5, &c);
    CHECK("curvature_mode: EKFAC",
          c != SENTINEL(seginf_curvature) && seginf_curvature_mode(c) == SEGINF_HESSIAN_EKFAC);
    if (c != SENTINEL(seginf_curvature)) seginf_curvature_free(c);
    FIT("kfac", SEGINF_OK, NULL, t, trained, SEGINF_HESSIAN_KFAC, 0.0, &kfac);
    FIT("exact", SEGINF_OK, NULL, t, trained, SEGINF_HESSIAN_EXACT, 0.0, &exact);
#undef FIT

    EXPECT("curvature_last_solve: curvature NULL", SEGINF_ERR_NULL_ARGUMENT, "`curvature`",
           seginf_curvature_last_solve(NULL, &iterations, &residual));
    if (kfac != NULL && exact != NULL) {
        EXPECT("curvature_last_solve: iterations NULL", SEGINF_ERR_NULL_ARGUMENT, "`iterations`",
               seginf_curvature_last_solve(exact, NULL, &residual));
        EXPECT("curvature_last_solve: relative_residual NULL", SEGINF_ERR_NULL_ARGUMENT,
               "`relative_residual`", seginf_curvature_last_solve(exact, &iterations, NULL));
        EXPECT("curvature_last_solve: K-FAC solves directly", SEGINF_ERR_INVALID_ARGUMENT,
               "directly", seginf_curvature_last_solve(kfac, &iterations, &residual));
        EXPECT("curvature_last_solve: exact, before any solve", SEGINF_ERR_INVALID_ARGUMENT,
               "not been used", seginf_curvature_last_solve(exact, &iterations, &residual));
        CHECK("curvature_last_solve: outputs untouched by failures",
              iterations == SENTINEL_SIZE && residual == SENTINEL_F64);
    }
    seginf_curvature_free(kfac);
    seginf_curvature_free(exact);
    seginf_trainer_free(unregularised);
    seginf_trainer_free(empty);
}

/* An index of the training set for `crf` (doc id = sequence number); NULL on failure. */
static seginf_index *training_index(const seginf_crf *crf) {
    seginf_index_builder *b = NULL;
    seginf_index *index = NULL;
    size_t s;
    if (seginf_index_builder_new(crf, NULL, &b) != SEGINF_OK) return NULL;
    for (s = 0; s < NS; s++) {
        if (seginf_index_builder_add(b, s, X(s), LENGTHS[s], Y(s)) != SEGINF_OK) {
            seginf_index_builder_free(b);
            return NULL;
        }
    }
    if (seginf_index_builder_finish(b, &index) != SEGINF_OK) return NULL;
    return index;
}

static void check_query_curvature(const seginf_trainer *t, const seginf_crf *trained,
                                  const seginf_crf *other_trained) {
    seginf_index *index = training_index(trained);
    seginf_query *q = NULL;
    seginf_curvature *exact = NULL, *kfac = NULL, *foreign = NULL;
    double identity[NT], with_kfac[NT], scores[NT];
    size_t iterations = SENTINEL_SIZE, i;
    double residual = SENTINEL_F64;
    int same = 1;

    if (index == NULL || seginf_query_new(index, &q) != SEGINF_OK ||
        seginf_curvature_fit(t, trained, SEGINF_HESSIAN_EXACT, 0.0, &exact) != SEGINF_OK ||
        seginf_curvature_fit(t, trained, SEGINF_HESSIAN_KFAC, 0.0, &kfac) != SEGINF_OK ||
        seginf_curvature_fit(t, other_trained, SEGINF_HESSIAN_KFAC, 0.0, &foreign) !=
            SEGINF_OK) {
        CHECK("index, query and curvatures (fixture)", 0);
        goto done;
    }
    EXPECT("query_set_hessian: KFAC needs the training data", SEGINF_ERR_INVALID_ARGUMENT,
           "seginf_query_set_curvature", seginf_query_set_hessian(q, SEGINF_HESSIAN_KFAC, 1.0));
    EXPECT("query_set_hessian: EKFAC needs the training data", SEGINF_ERR_INVALID_ARGUMENT,
           "seginf_curvature_fit", seginf_query_set_hessian(q, SEGINF_HESSIAN_EKFAC, 1.0));
    EXPECT("query_set_hessian: EXACT needs the training data", SEGINF_ERR_INVALID_ARGUMENT,
           "seginf_query_set_curvature", seginf_query_set_hessian(q, SEGINF_HESSIAN_EXACT, 1.0));
    EXPECT("query_set_hessian: mode 4 unknown", SEGINF_ERR_INVALID_ARGUMENT, "seginf_hessian",
           seginf_query_set_hessian(q, 4, 1.0));
    EXPECT("query_set_curvature: query NULL", SEGINF_ERR_NULL_ARGUMENT, "`query`",
           seginf_query_set_curvature(NULL, kfac));
    EXPECT("query_set_curvature: curvature NULL", SEGINF_ERR_NULL_ARGUMENT, "`curvature`",
           seginf_query_set_curvature(q, NULL));
    EXPECT("query_set_curvature: fitted at another CRF", SEGINF_ERR_MODEL_MISMATCH, "another CRF",
           seginf_query_set_curvature(q, foreign));
    EXPECT("query_scores: still the identity", SEGINF_OK, NULL,
           seginf_query_scores(q, X(0), LENGTHS[0], Y(0), 1, 2, identity, NT));

    EXPECT("query_set_curvature: kfac", SEGINF_OK, NULL, seginf_query_set_curvature(q, kfac));
    EXPECT("query_scores: kfac", SEGINF_OK, NULL,
           seginf_query_scores(q, X(0), LENGTHS[0], Y(0), 1, 2, with_kfac, NT));
    CHECK("query_scores: the curvature changes the scores", with_kfac[0] != identity[0]);
    EXPECT("query_set_curvature: fitted at another CRF, after a valid one",
           SEGINF_ERR_MODEL_MISMATCH, "another CRF", seginf_query_set_curvature(q, foreign));
    EXPECT("query_scores: still kfac", SEGINF_OK, NULL,
           seginf_query_scores(q, X(0), LENGTHS[0], Y(0), 1, 2, scores, NT));
    for (i = 0; i < NT; i++) same = same && scores[i] == with_kfac[i];
    CHECK("query_set_curvature: a failed call keeps the curvature set before", same);
    /* The curvature is freed first: the query keeps its own reference (ASan checks). */
    seginf_curvature_free(kfac);
    kfac = NULL;
    EXPECT("query_scores: kfac after its handle was freed", SEGINF_OK, NULL,
           seginf_query_scores(q, X(0), LENGTHS[0], Y(0), 1, 2, scores, NT));
    same = 1;
    for (i = 0; i < NT; i++) same = same && scores[i] == with_kfac[i];
    CHECK("query_scores: unchanged by freeing the curvature handle", same);

    EXPECT("query_set_curvature: exact", SEGINF_OK, NULL, seginf_query_set_curvature(q, exact));
    EXPECT("query_scores: exact", SEGINF_OK, NULL,
           seginf_query_scores(q, X(0), LENGTHS[0], Y(0), 1, 2, scores, NT));
    EXPECT("curvature_last_solve: exact, after a query", SEGINF_OK, NULL,
           seginf_curvature_last_solve(exact, &iterations, &residual));
    CHECK("curvature_last_solve: some iterations, residual <= 1e-8",
          iterations > 0 && iterations != SENTINEL_SIZE && residual <= 1e-8);
    EXPECT("query_set_hessian: back to the identity", SEGINF_OK, NULL,
           seginf_query_set_hessian(q, SEGINF_HESSIAN_IDENTITY, 1.0));
    EXPECT("query_scores: identity again", SEGINF_OK, NULL,
           seginf_query_scores(q, X(0), LENGTHS[0], Y(0), 1, 2, scores, NT));
    same = 1;
    for (i = 0; i < NT; i++) same = same && scores[i] == identity[i];
    CHECK("query_set_hessian: identity scores as before", same);
done:
    seginf_curvature_free(foreign);
    seginf_curvature_free(kfac);
    seginf_curvature_free(exact);
    seginf_query_free(q);
    seginf_index_free(index);
}

static void check_curvature_files(const seginf_trainer *t, const seginf_crf *trained,
                                  const seginf_crf *other_trained) {
    /* Written in the working directory: the harness runs each program in a scratch dir. */
    static const char *const path = "train_null_args.kfac.safetensors";
    static const char *const garbage = "train_null_args.garbage";
    seginf_curvature *kfac = NULL, *exact = NULL;
    seginf_curvature *opened = SENTINEL(seginf_curvature);
    double a[2] = {SENTINEL_F64, SENTINEL_F64}, b[2] = {SENTINEL_F64, SENTINEL_F64};
    FILE *f;

    if (seginf_curvature_fit(t, trained, SEGINF_HESSIAN_KFAC, 0.01, &kfac) != SEGINF_OK ||
        seginf_curvature_fit(t, trained, SEGINF_HESSIAN_EXACT, 0.01, &exact) != SEGINF_OK) {
        CHECK("curvatures (fixture)", 0);
        goto done;
    }
    EXPECT("curvature_save: curvature NULL", SEGINF_ERR_NULL_ARGUMENT, "`curvature`",
           seginf_curvature_save(NULL, path));
    EXPECT("curvature_save: path NULL", SEGINF_ERR_NULL_ARGUMENT, "`path`",
           seginf_curvature_save(kfac, NULL));
    EXPECT("curvature_save: exact has nothing to save", SEGINF_ERR_UNSUPPORTED, "exact",
           seginf_curvature_save(exact, path));
    EXPECT("curvature_save: a directory that does not exist", SEGINF_ERR_IO, NULL,
           seginf_curvature_save(kfac, "no/such/dir/curvature.safetensors"));
    EXPECT("curvature_save: K-FAC", SEGINF_OK, NULL, seginf_curvature_save(kfac, path));
    EXPECT("curvature_open: path NULL", SEGINF_ERR_NULL_ARGUMENT, "`path`",
           seginf_curvature_open(NULL, trained, &opened));
    EXPECT("curvature_open: crf NULL", SEGINF_ERR_NULL_ARGUMENT, "`crf`",
           seginf_curvature_open(path, NULL, &opened));
    EXPECT("curvature_open: out NULL", SEGINF_ERR_NULL_ARGUMENT, "`out`",
           seginf_curvature_open(path, trained, NULL));
    EXPECT("curvature_open: missing file", SEGINF_ERR_IO, NULL,
           seginf_curvature_open("missing.safetensors", trained, &opened));
    f = fopen(garbage, "wb");
    if (f != NULL) {
        fputs("not a safetensors file at all", f);
        fclose(f);
    }
    EXPECT("curvature_open: garbage", SEGINF_ERR_FORMAT, NULL,
           seginf_curvature_open(garbage, trained, &opened));
    EXPECT("curvature_open: another CRF", SEGINF_ERR_MODEL_MISMATCH, "another CRF",
           seginf_curvature_open(path, other_trained, &opened));
    CHECK("curvature_open: *out untouched by failures", opened == SENTINEL(seginf_curvature));
    EXPECT("curvature_open: K-FAC", SEGINF_OK, NULL, seginf_curvature_open(path, trained, &opened));
    CHECK("curvature_open: the mode is K-FAC",
          opened != SENTINEL(seginf_curvature) &&
              seginf_curvature_mode(opened) == SEGINF_HESSIAN_KFAC);
    /* The reopened factors precondition exactly as the fitted ones: compare the exact
     * influence predictions they give for one training token. */
    EXPECT("exact_influence with the fitted K-FAC", SEGINF_OK, NULL,
           seginf_exact_influence(t, trained, kfac, 0, 1, 1, X(1), LENGTHS[1], Y(1), 0, 1, &a[0],
                                  &a[1]));
    EXPECT("exact_influence with the reopened K-FAC", SEGINF_OK, NULL,
           seginf_exact_influence(t, trained, opened, 0, 1, 1, X(1), LENGTHS[1], Y(1), 0, 1, &b[0],
                                  &b[1]));
    CHECK("curvature_open: same prediction, bit for bit", a[1] == b[1] && a[1] != SENTINEL_F64);
done:
    if (opened != SENTINEL(seginf_curvature)) seginf_curvature_free(opened);
    seginf_curvature_free(exact);
    seginf_curvature_free(kfac);
}

static void check_exact_influence(const seginf_crf *crf, seginf_trainer *t,
                                  const seginf_crf *trained, const seginf_crf *other_trained,
                                  const seginf_crf *more_features) {
    seginf_curvature *exact = NULL, *foreign = NULL;
    seginf_trainer *partial = NULL;
    double actual = SENTINEL_F64, predicted = SENTINEL_F64;
    const float *x = X(0);
    const uint32_t *y = Y(0);
    int stops = 0, calls = 0;
    size_t s;

    if (seginf_curvature_fit(t, trained, SEGINF_HESSIAN_EXACT, 0.0, &exact) != SEGINF_OK ||
        seginf_curvature_fit(t, other_trained, SEGINF_HESSIAN_KFAC, 0.0, &foreign) !=
            SEGINF_OK ||
        seginf_trainer_new(crf, &partial) != SEGINF_OK) {
        CHECK("curvatures (fixture)", 0);
        goto done;
    }
    /* The same training set with sequence 1's token 1 unlabelled. */
    for (s = 0; s < NS; s++) {
        seginf_trainer_add(partial, X(s), LENGTHS[s], Y(s), s == 1 ? SECOND_UNLABELLED : NULL);
    }
    seginf_trainer_set_l2(partial, 0.25);
#define INFLUENCE(what, want, needle, data, trained_, curv, seq, first, last, tx, tn, ty, tf, tl, \
                  a, p)                                                                        \
    EXPECT("exact_influence: " what, (want), (needle),                                        \
           seginf_exact_influence((data), (trained_), (curv), (seq), (first), (last), (tx),     \
                                  (tn), (ty), (tf), (tl), (a), (p)))
    INFLUENCE("data NULL", SEGINF_ERR_NULL_ARGUMENT, "`data`", NULL, trained, exact, 1, 0, 0, x, 4,
              y, 1, 2, &actual, &predicted);
    INFLUENCE("trained NULL", SEGINF_ERR_NULL_ARGUMENT, "`trained`", t, NULL, exact, 1, 0, 0, x, 4,
              y, 1, 2, &actual, &predicted);
    INFLUENCE("test_features NULL", SEGINF_ERR_NULL_ARGUMENT, "`test_features`", t, trained, exact, 1,
              0, 0, NULL, 4, y, 1, 2, &actual, &predicted);
    INFLUENCE("test_labels NULL", SEGINF_ERR_NULL_ARGUMENT, "`test_labels`", t, trained, exact, 1, 0,
              0, x, 4, NULL, 1, 2, &actual, &predicted);
    INFLUENCE("actual NULL", SEGINF_ERR_NULL_ARGUMENT, "`actual`", t, trained, exact, 1, 0, 0, x,
              4, y, 1, 2, NULL, &predicted);
    INFLUENCE("predicted NULL", SEGINF_ERR_NULL_ARGUMENT, "`predicted`", t, trained, exact, 1, 0,
              0, x, 4, y, 1, 2, &actual, NULL);
    INFLUENCE("test_n = 0", SEGINF_ERR_INVALID_ARGUMENT, "n = 0", t, trained, exact, 1, 0, 0, x, 0,
              y, 0, 0, &actual, &predicted);
    INFLUENCE("test_n x d overflows", SEGINF_ERR_INVALID_ARGUMENT, NULL, t, trained, exact, 1, 0,
              0, x, SIZE_MAX, y, 0, 0, &actual, &predicted);
    INFLUENCE("train_sequence = S", SEGINF_ERR_INVALID_ARGUMENT, "training sequence 4", t,
              trained, exact, NS, 0, 0, x, 4, y, 1, 2, &actual, &predicted);
    INFLUENCE("train_sequence = SIZE_MAX", SEGINF_ERR_INVALID_ARGUMENT, "training sequence", t,
              trained, exact, SIZE_MAX, 0, 0, x, 4, y, 1, 2, &actual, &predicted);
    INFLUENCE("train_first > train_last", SEGINF_ERR_BAD_SEGMENT, "[2, 1]", t, trained, exact, 1,
              2, 1, x, 4, y, 1, 2, &actual, &predicted);
    INFLUENCE("train_last = n", SEGINF_ERR_BAD_SEGMENT, "3 tokens", t, trained, exact, 1, 0, 3, x,
              4, y, 1, 2, &actual, &predicted);
    INFLUENCE("test first > last", SEGINF_ERR_BAD_SEGMENT, NULL, t, trained, exact, 1, 0, 0, x, 4,
              y, 2, 1, &actual, &predicted);
    INFLUENCE("test last = n", SEGINF_ERR_BAD_SEGMENT, NULL, t, trained, exact, 1, 0, 0, x, 4, y,
              1, 4, &actual, &predicted);
    INFLUENCE("test label = C", SEGINF_ERR_LABEL_OUT_OF_RANGE, "labels[3]", t, trained, exact, 1,
              0, 0, x, 4, label_at(y, 4, 3, C), 1, 2, &actual, &predicted);
    INFLUENCE("NaN test feature", SEGINF_ERR_NON_FINITE, "features", t, trained, exact, 1, 0, 0,
              with_value(x, 4 * D, 4, NAN), 4, y, 1, 2, &actual, &predicted);
    INFLUENCE("impossible test labels", SEGINF_ERR_IMPOSSIBLE_LABELS, NULL, t, trained, exact, 1,
              0, 0, x, 4, IMPOSSIBLE, 1, 1, &actual, &predicted);
    INFLUENCE("curvature fitted at another CRF", SEGINF_ERR_MODEL_MISMATCH, "another CRF", t,
              trained, foreign, 1, 0, 0, x, 4, y, 1, 2, &actual, &predicted);
    INFLUENCE("trained of another shape", SEGINF_ERR_DIMENSION_MISMATCH, NULL, t, more_features,
              NULL, 1, 0, 0, x, 4, y, 1, 2, &actual, &predicted);
    INFLUENCE("removing an unlabelled training token", SEGINF_ERR_INVALID_ARGUMENT, "unlabelled",
              partial, trained, NULL, 1, 1, 1, x, 4, y, 1, 2, &actual, &predicted);
    seginf_trainer_set_max_iterations(t, 1);
    INFLUENCE("retraining stopped by max_iterations = 1", SEGINF_ERR_NOT_CONVERGED,
              "seginf_trainer_set_max_iterations", t, trained, exact, 1, 0, 0, x, 4, y, 1, 2,
              &actual, &predicted);
    seginf_trainer_set_max_iterations(t, 1000);
    /* The retraining reports to the trainer's progress callback, which may cancel it. */
    seginf_trainer_set_progress(t, stop, &stops);
    INFLUENCE("progress callback cancels the retraining", SEGINF_ERR_CANCELLED,
              "progress callback", t, trained, exact, 1, 0, 0, x, 4, y, 1, 2, &actual, &predicted);
    CHECK("exact_influence: the callback was called once", stops == 1);
    CHECK("exact_influence: outputs untouched by failures",
          actual == SENTINEL_F64 && predicted == SENTINEL_F64);

    seginf_trainer_set_progress(t, keep_going, &calls);
    INFLUENCE("valid, exact curvature", SEGINF_OK, NULL, t, trained, exact, 1, 0, 0, x, 4, y, 1, 2,
              &actual, &predicted);
    CHECK("exact_influence: the callback saw the retraining's steps", calls >= 1);
    seginf_trainer_set_progress(t, NULL, NULL);
    /* Four sequences: removing one label of 12 is a large change, so only roughly linear. */
    CHECK("exact_influence: both written, the prediction within 50% of the retraining",
          actual != SENTINEL_F64 && predicted != SENTINEL_F64 &&
              fabs(predicted - actual) <= 0.5 * fabs(actual));
    actual = predicted = SENTINEL_F64;
    INFLUENCE("valid, curvature NULL (identity)", SEGINF_OK, NULL, t, trained, NULL, 2, 0, 1, x,
              4, y, 0, 3, &actual, &predicted);
    CHECK("exact_influence: identity, both written",
          actual != SENTINEL_F64 && predicted != SENTINEL_F64);
    INFLUENCE("valid on the partially labelled data, another sequence", SEGINF_OK, NULL, partial,
              trained, NULL, 2, 0, 0, x, 4, y, 1, 2, &actual, &predicted);
    INFLUENCE("valid: a labelled token of the partially labelled sequence", SEGINF_OK, NULL,
              partial, trained, NULL, 1, 0, 0, x, 4, y, 1, 2, &actual, &predicted);
#undef INFLUENCE
done:
    seginf_trainer_free(partial);
    seginf_curvature_free(foreign);
    seginf_curvature_free(exact);
}

/* Makes a CRF; reports and returns NULL on failure. */
static seginf_crf *make_crf(size_t c, size_t d, const float *w, const float *b, const float *a,
                            const float *s, const float *e) {
    seginf_crf *crf = NULL;
    if (seginf_crf_new(c, d, w, b, a, s, e, &crf) != SEGINF_OK) {
        CHECK("crf_new (fixture)", 0);
        return NULL;
    }
    return crf;
}

int main(void) {
    static const float W2[2 * D] = {0.5f, -0.25f, 0.25f, 0.5f};
    static const float A2[2 * 2] = {0.25f, 0.5f, -0.125f, 0.0f};
    static const float W3[C * 3] = {0.5f, -0.25f, 0.25f, 0.5f, -0.5f, 0.25f, 0.125f, 0.0f, 1.0f};
    seginf_crf *crf = make_crf(C, D, WEIGHTS, BIAS, TRANSITIONS, START, END);
    seginf_crf *other = make_crf(C, D, OTHER_WEIGHTS, BIAS, TRANSITIONS, START, END);
    seginf_crf *strict = make_crf(C, D, WEIGHTS, BIAS, STRICT_TRANSITIONS, START, END);
    seginf_crf *fewer_labels = make_crf(2, D, W2, BIAS, A2, START, END);
    seginf_crf *more_features = make_crf(C, 3, W3, BIAS, TRANSITIONS, START, END);
    seginf_crf *no_bias = make_crf(C, D, WEIGHTS, NULL, TRANSITIONS, START, END);
    seginf_crf *no_end = make_crf(C, D, WEIGHTS, BIAS, TRANSITIONS, START, NULL);
    seginf_crf *trained = NULL, *other_trained = NULL;
    seginf_trainer *t = NULL, *other_t = NULL;

    if (crf == NULL || other == NULL || strict == NULL || fewer_labels == NULL ||
        more_features == NULL || no_bias == NULL || no_end == NULL) {
        fprintf(stderr, "train_null_args: cannot build the fixtures\n");
        return 2;
    }
    g_crf = crf;

    check_trainer_new_and_add(crf);
    check_trainer_setters(crf, other, fewer_labels, more_features, no_bias, no_end);
    check_trainer_run(crf, strict);

    /* Two trained models: from `crf`, and from `other` on half the data (a different CRF of
     * the same shape, for the model-mismatch checks). */
    t = full_trainer(crf);
    if (t == NULL || seginf_trainer_run(t, &trained, NULL, NULL, NULL) != SEGINF_OK ||
        seginf_trainer_new(other, &other_t) != SEGINF_OK ||
        seginf_trainer_add(other_t, X(0), LENGTHS[0], Y(0), NULL) != SEGINF_OK ||
        seginf_trainer_add(other_t, X(1), LENGTHS[1], Y(1), NULL) != SEGINF_OK ||
        seginf_trainer_set_l2(other_t, 0.25) != SEGINF_OK ||
        seginf_trainer_run(other_t, &other_trained, NULL, NULL, NULL) != SEGINF_OK) {
        CHECK("trained models (fixture)", 0);
    } else {
        check_curvature(crf, strict, more_features, t, trained);
        check_query_curvature(t, trained, other_trained);
        check_curvature_files(t, trained, other_trained);
        check_exact_influence(crf, t, trained, other_trained, more_features);
    }

    seginf_trainer_free(other_t);
    seginf_trainer_free(t);
    seginf_crf_free(other_trained);
    seginf_crf_free(trained);
    seginf_crf_free(no_end);
    seginf_crf_free(no_bias);
    seginf_crf_free(more_features);
    seginf_crf_free(fewer_labels);
    seginf_crf_free(strict);
    seginf_crf_free(other);
    seginf_crf_free(crf);
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
