/*
 * crf_basic.c -- a small C user of seginf: build a CRF from arrays, decode, score, and take
 * the conditional loss of a segment and its gradient; then add BIO constraints and repeat.
 *
 * Output: one result per line, "key value value ...", floating point as %.17g so that it reads
 * back exactly. tests/c_abi.rs rebuilds the same parameters in Rust and checks every line.
 *
 * Parameters and features are small dyadic rationals (k / 8, k / 4) from integer formulas, so
 * they are exact in float and the Rust test reproduces them bit for bit without relying on libm.
 */

#include "seginf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define C 4 /* labels: O, B-PER, I-PER, B-LOC */
#define D 5 /* feature dimension */
#define N 6 /* tokens */

static const char *const LABEL_NAMES[C] = {"O", "B-PER", "I-PER", "B-LOC"};

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
    fprintf(stderr, "crf_basic: %s failed: %s: %s\n", what, seginf_status_name(status), message);
    return 1;
}

/* Jumps to `done` (which frees everything) when a call fails. */
#define CHECK(call)                         \
    do {                                    \
        if (failed((call), #call)) {        \
            goto done;                      \
        }                                   \
    } while (0)

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

static void print_flags(const char *key, const uint8_t *flags, size_t count) {
    size_t i;
    printf("%s", key);
    for (i = 0; i < count; i++) {
        printf(" %u", (unsigned)flags[i]);
    }
    printf("\n");
}

int main(void) {
    float weights[C * D], bias[C], transitions[C * C], start[C], end[C], features[N * D];
    /* B-PER I-PER O B-LOC O O: allowed under BIO. */
    const uint32_t gold[N] = {1, 2, 0, 3, 0, 0};
    const size_t seg_first = 1, seg_last = 2; /* the PER entity */
    seginf_crf *crf = NULL, *constrained = NULL;
    double *grad = NULL, *params = NULL;
    double marginals[N * C], segment_marginals[2 * C], error_vectors[2 * C];
    double score, log_likelihood, log_partition, loss;
    uint32_t path[N];
    uint8_t allowed_transitions[C * C], allowed_start[C], allowed_end[C];
    size_t num_params, i, j, offset;
    char key[64];
    int exit_code = 1;

    for (i = 0; i < C; i++) {
        for (j = 0; j < D; j++) {
            weights[i * D + j] = dyadic((i * 7 + j * 5 + 3) % 13, 6, 8.0f);
        }
        for (j = 0; j < C; j++) {
            transitions[i * C + j] = dyadic((i * 3 + j * 5) % 7, 3, 8.0f);
        }
        bias[i] = dyadic(i % 3, 1, 4.0f);
        start[i] = dyadic(2 * i, 3, 8.0f);
        end[i] = dyadic((3 * i) % 5, 2, 8.0f);
    }
    transitions[0 * C + 2] = -INFINITY; /* O -> I-PER is forbidden */
    for (i = 0; i < N; i++) {
        for (j = 0; j < D; j++) {
            features[i * D + j] = dyadic((i * 5 + j * 2 + 1) % 9, 4, 4.0f);
        }
    }

    printf("version %s\n", seginf_version());
    CHECK(seginf_crf_new(C, D, weights, bias, transitions, start, end, &crf));
    num_params = seginf_crf_num_params(crf);
    printf("dims %zu %zu %zu\n", seginf_crf_num_labels(crf), seginf_crf_feature_dim(crf),
           num_params);
    printf("param_offsets");
    for (i = SEGINF_PARAM_WEIGHT; i <= SEGINF_PARAM_END; i++) {
        CHECK(seginf_crf_param_offset(crf, (int32_t)i, &offset));
        printf(" %zu", offset);
    }
    printf("\n");

    params = malloc(num_params * sizeof *params);
    grad = malloc(num_params * sizeof *grad);
    if (params == NULL || grad == NULL) {
        fprintf(stderr, "crf_basic: out of memory\n");
        goto done;
    }
    CHECK(seginf_crf_get_params(crf, params, num_params));
    print_doubles("params", params, num_params);

    CHECK(seginf_crf_viterbi(crf, features, N, path, &score));
    print_labels("viterbi_path", path, N);
    print_doubles("viterbi_score", &score, 1);

    CHECK(seginf_crf_log_likelihood(crf, features, N, gold, &log_likelihood));
    print_doubles("log_likelihood", &log_likelihood, 1);
    CHECK(seginf_crf_log_partition(crf, features, N, &log_partition));
    print_doubles("log_partition", &log_partition, 1);

    CHECK(seginf_crf_marginals(crf, features, N, marginals));
    for (i = 0; i < N; i++) {
        sprintf(key, "marginals_%zu", i);
        print_doubles(key, marginals + i * C, C);
    }

    CHECK(seginf_crf_segment_loss(crf, features, N, gold, seg_first, seg_last, &loss));
    print_doubles("segment_loss", &loss, 1);
    CHECK(seginf_crf_segment_marginals(crf, features, N, gold, seg_first, seg_last,
                                       segment_marginals));
    print_doubles("segment_marginals", segment_marginals, 2 * C);
    CHECK(seginf_crf_segment_error_vectors(crf, features, N, gold, seg_first, seg_last,
                                           error_vectors));
    print_doubles("segment_error_vectors", error_vectors, 2 * C);
    CHECK(seginf_crf_segment_gradient(crf, features, N, gold, seg_first, seg_last, grad));
    print_doubles("segment_gradient", grad, num_params);

    /* BIO constraints: the mask itself, then a constrained copy of the model. */
    CHECK(seginf_constraint_mask(SEGINF_TAG_SCHEME_BIO, LABEL_NAMES, C, allowed_transitions,
                                 allowed_start, allowed_end));
    print_flags("mask_transitions", allowed_transitions, C * C);
    print_flags("mask_start", allowed_start, C);
    print_flags("mask_end", allowed_end, C);

    CHECK(seginf_crf_with_constraints(crf, SEGINF_TAG_SCHEME_BIO, LABEL_NAMES, C, &constrained));
    printf("constrained_num_params %zu\n", seginf_crf_num_params(constrained));
    CHECK(seginf_crf_viterbi(constrained, features, N, path, &score));
    print_labels("constrained_viterbi_path", path, N);
    print_doubles("constrained_viterbi_score", &score, 1);
    CHECK(seginf_crf_log_likelihood(constrained, features, N, gold, &log_likelihood));
    print_doubles("constrained_log_likelihood", &log_likelihood, 1);
    CHECK(seginf_crf_log_partition(constrained, features, N, &log_partition));
    print_doubles("constrained_log_partition", &log_partition, 1);
    CHECK(seginf_crf_segment_loss(constrained, features, N, gold, seg_first, seg_last, &loss));
    print_doubles("constrained_segment_loss", &loss, 1);

    exit_code = 0;
done:
    seginf_crf_free(constrained);
    seginf_crf_free(crf);
    free(grad);
    free(params);
    return exit_code;
}
