/*
 * seginf_jni.c -- the JNI glue of SegInf.java; uses only seginf.h (and jni.h).
 *
 * Each native method checks what the C API cannot see (Java array lengths against the sizes
 * the call implies, negative Java ints where C takes a size_t), calls one or two seginf
 * functions and turns a failed status into a SegInf.SegInfException holding the status name
 * and the library's message, read on the same thread right after the failing call. Java
 * arrays are borrowed for the duration of a call (Get/Release<Type>ArrayElements, released
 * without copying back: the library only reads them). Handles travel as jlong.
 *
 * Build: cc -shared -fPIC -I<jdk>/include -I<jdk>/include/linux -I<seginf>/include
 *        seginf_jni.c -o libseginf_jni.so -L<dir of libseginf.so> -lseginf
 */

#include <jni.h>

#include "seginf.h"

#include <stdint.h>
#include <stdlib.h>

/* ---- errors ---------------------------------------------------------------------------- */

/* Throws SegInf.SegInfException(status name, last error message). */
static void throw_status(JNIEnv *env, seginf_status status) {
    char message[1024];
    jclass cls;
    jmethodID ctor;
    jstring name, text;
    jobject exception;
    if (seginf_last_error_message(message, sizeof message, NULL) != SEGINF_OK) {
        message[0] = '\0';
    }
    cls = (*env)->FindClass(env, "SegInf$SegInfException");
    if (cls == NULL) {
        return; /* NoClassDefFoundError is pending */
    }
    ctor = (*env)->GetMethodID(env, cls, "<init>", "(Ljava/lang/String;Ljava/lang/String;)V");
    if (ctor == NULL) {
        return;
    }
    name = (*env)->NewStringUTF(env, seginf_status_name(status));
    if (name == NULL) {
        return;
    }
    text = (*env)->NewStringUTF(env, message);
    if (text == NULL) {
        return;
    }
    exception = (*env)->NewObject(env, cls, ctor, name, text);
    if (exception != NULL) {
        (*env)->Throw(env, (jthrowable)exception);
    }
}

static void throw_java(JNIEnv *env, const char *class_name, const char *message) {
    jclass cls = (*env)->FindClass(env, class_name);
    if (cls != NULL) {
        (*env)->ThrowNew(env, cls, message);
    }
}

static void throw_illegal(JNIEnv *env, const char *message) {
    throw_java(env, "java/lang/IllegalArgumentException", message);
}

/* Nonzero (and an exception pending) when `status` is a failure. */
static int failed(JNIEnv *env, seginf_status status) {
    if (status == SEGINF_OK) {
        return 0;
    }
    throw_status(env, status);
    return 1;
}

/* ---- borrowed arrays ------------------------------------------------------------------- */

/* A Java float[] (or null) borrowed for one call; `len` is -1 for null. */
struct floats {
    jfloatArray array;
    jfloat *data;
    jsize len;
};

/* Borrows `array`, which must hold exactly `want` values (any length when want < 0), or be
 * null when `nullable`. Returns 0 with an exception pending on failure. */
static int borrow_floats(JNIEnv *env, jfloatArray array, jlong want, int nullable,
                         const char *what, struct floats *out) {
    out->array = array;
    out->data = NULL;
    out->len = -1;
    if (array == NULL) {
        if (!nullable) {
            throw_java(env, "java/lang/NullPointerException", what);
        }
        return nullable;
    }
    out->len = (*env)->GetArrayLength(env, array);
    if (want >= 0 && (jlong)out->len != want) {
        throw_illegal(env, what);
        return 0;
    }
    out->data = (*env)->GetFloatArrayElements(env, array, NULL);
    return out->data != NULL; /* OutOfMemoryError pending otherwise */
}

static void release_floats(JNIEnv *env, struct floats *f) {
    if (f->data != NULL) {
        (*env)->ReleaseFloatArrayElements(env, f->array, f->data, JNI_ABORT);
        f->data = NULL;
    }
}

/* A test or training sequence: features (n x d, the Java side checked the shape) and labels
 * (n), both borrowed. jint and uint32_t have the same size; a negative label reads as a huge
 * one, which the library reports as out of range. */
struct sequence {
    struct floats features;
    jintArray labels_array;
    jint *labels;
    size_t n;
};

static int borrow_sequence(JNIEnv *env, jfloatArray features, jintArray labels,
                           struct sequence *out) {
    out->labels_array = labels;
    out->labels = NULL;
    out->features.data = NULL;
    if (labels == NULL) {
        throw_java(env, "java/lang/NullPointerException", "labels");
        return 0;
    }
    out->n = (size_t)(*env)->GetArrayLength(env, labels);
    if (!borrow_floats(env, features, -1, 0, "features", &out->features)) {
        return 0;
    }
    out->labels = (*env)->GetIntArrayElements(env, labels, NULL);
    return out->labels != NULL;
}

static void release_sequence(JNIEnv *env, struct sequence *s) {
    release_floats(env, &s->features);
    if (s->labels != NULL) {
        (*env)->ReleaseIntArrayElements(env, s->labels_array, s->labels, JNI_ABORT);
        s->labels = NULL;
    }
}

/* A Java String as a NUL-terminated modified-UTF-8 path, or NULL with an exception pending. */
static const char *borrow_path(JNIEnv *env, jstring path) {
    if (path == NULL) {
        throw_java(env, "java/lang/NullPointerException", "path");
        return NULL;
    }
    return (*env)->GetStringUTFChars(env, path, NULL);
}

#define HANDLE(type, h) ((type *)(intptr_t)(h))
#define JHANDLE(p) ((jlong)(intptr_t)(p))

/* ---- CRF ------------------------------------------------------------------------------- */

JNIEXPORT jlong JNICALL Java_SegInf_crfNew(JNIEnv *env, jclass cls, jint num_labels,
                                           jint feature_dim, jfloatArray weights,
                                           jfloatArray bias, jfloatArray transitions,
                                           jfloatArray start, jfloatArray end) {
    struct floats w = {0}, b = {0}, a = {0}, s = {0}, e = {0};
    seginf_crf *crf = NULL;
    jlong c = num_labels, d = feature_dim;
    (void)cls;
    if (num_labels < 0 || feature_dim < 0) {
        throw_illegal(env, "negative dimension");
        return 0;
    }
    if (borrow_floats(env, weights, c * d, 0, "weights: numLabels x featureDim values", &w) &&
        borrow_floats(env, bias, c, 1, "bias: numLabels values", &b) &&
        borrow_floats(env, transitions, c * c, 0, "transitions: numLabels^2 values", &a) &&
        borrow_floats(env, start, c, 1, "start: numLabels values", &s) &&
        borrow_floats(env, end, c, 1, "end: numLabels values", &e)) {
        (void)failed(env, seginf_crf_new((size_t)c, (size_t)d, w.data, b.data, a.data, s.data,
                                         e.data, &crf));
    }
    release_floats(env, &w);
    release_floats(env, &b);
    release_floats(env, &a);
    release_floats(env, &s);
    release_floats(env, &e);
    return JHANDLE(crf);
}

JNIEXPORT void JNICALL Java_SegInf_crfFree(JNIEnv *env, jclass cls, jlong crf) {
    (void)env;
    (void)cls;
    seginf_crf_free(HANDLE(seginf_crf, crf));
}

/* ---- index builder --------------------------------------------------------------------- */

JNIEXPORT jlong JNICALL Java_SegInf_builderNew(JNIEnv *env, jclass cls, jlong crf,
                                               jint storage) {
    seginf_index_options *opts = NULL;
    seginf_index_builder *builder = NULL;
    (void)cls;
    if (!failed(env, seginf_index_options_new(&opts)) &&
        !failed(env, seginf_index_options_set_storage(opts, storage))) {
        (void)failed(env, seginf_index_builder_new(HANDLE(seginf_crf, crf), opts, &builder));
    }
    seginf_index_options_free(opts);
    return JHANDLE(builder);
}

JNIEXPORT void JNICALL Java_SegInf_builderAdd(JNIEnv *env, jclass cls, jlong builder,
                                              jlong doc_id, jfloatArray features,
                                              jintArray labels) {
    struct sequence seq;
    (void)cls;
    if (borrow_sequence(env, features, labels, &seq)) {
        (void)failed(env, seginf_index_builder_add(HANDLE(seginf_index_builder, builder),
                                                   (uint64_t)doc_id, seq.features.data, seq.n,
                                                   (const uint32_t *)seq.labels));
    }
    release_sequence(env, &seq);
}

JNIEXPORT jlong JNICALL Java_SegInf_builderFinish(JNIEnv *env, jclass cls, jlong builder) {
    seginf_index *index = NULL;
    (void)cls;
    /* Consumes the builder, on success and on error alike. */
    (void)failed(env, seginf_index_builder_finish(HANDLE(seginf_index_builder, builder), &index));
    return JHANDLE(index);
}

JNIEXPORT void JNICALL Java_SegInf_builderFree(JNIEnv *env, jclass cls, jlong builder) {
    (void)env;
    (void)cls;
    seginf_index_builder_free(HANDLE(seginf_index_builder, builder));
}

/* ---- index ----------------------------------------------------------------------------- */

JNIEXPORT void JNICALL Java_SegInf_indexSave(JNIEnv *env, jclass cls, jlong index,
                                             jstring path) {
    const char *p = borrow_path(env, path);
    (void)cls;
    if (p != NULL) {
        (void)failed(env, seginf_index_save(HANDLE(seginf_index, index), p));
        (*env)->ReleaseStringUTFChars(env, path, p);
    }
}

JNIEXPORT jlong JNICALL Java_SegInf_indexOpen(JNIEnv *env, jclass cls, jstring path,
                                              jlong crf) {
    seginf_index *index = NULL;
    const char *p = borrow_path(env, path);
    (void)cls;
    if (p != NULL) {
        (void)failed(env, seginf_index_open(p, HANDLE(seginf_crf, crf), &index));
        (*env)->ReleaseStringUTFChars(env, path, p);
    }
    return JHANDLE(index);
}

JNIEXPORT jlong JNICALL Java_SegInf_indexNumTokens(JNIEnv *env, jclass cls, jlong index) {
    (void)env;
    (void)cls;
    return (jlong)seginf_index_num_tokens(HANDLE(seginf_index, index));
}

JNIEXPORT jlong JNICALL Java_SegInf_indexNumSequences(JNIEnv *env, jclass cls, jlong index) {
    (void)env;
    (void)cls;
    return (jlong)seginf_index_num_sequences(HANDLE(seginf_index, index));
}

JNIEXPORT jint JNICALL Java_SegInf_indexStorage(JNIEnv *env, jclass cls, jlong index) {
    (void)env;
    (void)cls;
    return (jint)seginf_index_storage(HANDLE(seginf_index, index));
}

JNIEXPORT void JNICALL Java_SegInf_indexFree(JNIEnv *env, jclass cls, jlong index) {
    (void)env;
    (void)cls;
    seginf_index_free(HANDLE(seginf_index, index));
}

/* ---- query ----------------------------------------------------------------------------- */

JNIEXPORT jlong JNICALL Java_SegInf_queryNew(JNIEnv *env, jclass cls, jlong index) {
    seginf_query *query = NULL;
    (void)cls;
    (void)failed(env, seginf_query_new(HANDLE(seginf_index, index), &query));
    return JHANDLE(query);
}

JNIEXPORT void JNICALL Java_SegInf_querySetGranularity(JNIEnv *env, jclass cls, jlong query,
                                                       jint granularity) {
    (void)cls;
    (void)failed(env, seginf_query_set_granularity(HANDLE(seginf_query, query), granularity));
}

/* A SegInf.Hit[] of the first `count` hits, or NULL with an exception pending. */
static jobjectArray hit_array(JNIEnv *env, const seginf_hit *hits, size_t count) {
    jclass cls = (*env)->FindClass(env, "SegInf$Hit");
    jmethodID ctor;
    jobjectArray array;
    size_t i;
    if (cls == NULL) {
        return NULL;
    }
    ctor = (*env)->GetMethodID(env, cls, "<init>", "(JIID)V");
    if (ctor == NULL) {
        return NULL;
    }
    array = (*env)->NewObjectArray(env, (jsize)count, cls, NULL);
    for (i = 0; array != NULL && i < count; i++) {
        jobject hit = (*env)->NewObject(env, cls, ctor, (jlong)hits[i].doc_id,
                                        (jint)hits[i].position, (jint)hits[i].label,
                                        (jdouble)hits[i].score);
        if (hit == NULL) {
            return NULL;
        }
        (*env)->SetObjectArrayElement(env, array, (jsize)i, hit);
        (*env)->DeleteLocalRef(env, hit);
    }
    return array;
}

JNIEXPORT jobjectArray JNICALL Java_SegInf_queryRun(JNIEnv *env, jclass cls, jlong query,
                                                    jfloatArray features, jintArray labels,
                                                    jint first, jint last, jint k) {
    struct sequence seq;
    seginf_hit *supporting = NULL, *opposing = NULL;
    size_t found = 0;
    jobjectArray result = NULL, ends[2] = {NULL, NULL};
    jclass hit_array_class;
    (void)cls;
    if (first < 0 || last < 0 || k <= 0) {
        throw_illegal(env, "first and last must not be negative, k must be positive");
        return NULL;
    }
    if (!borrow_sequence(env, features, labels, &seq)) {
        release_sequence(env, &seq);
        return NULL;
    }
    supporting = malloc((size_t)k * sizeof *supporting);
    opposing = malloc((size_t)k * sizeof *opposing);
    if (supporting == NULL || opposing == NULL) {
        throw_java(env, "java/lang/OutOfMemoryError", "hit buffers");
    } else if (!failed(env, seginf_query_run(HANDLE(seginf_query, query), seq.features.data,
                                             seq.n, (const uint32_t *)seq.labels, (size_t)first,
                                             (size_t)last, supporting, opposing, (size_t)k,
                                             &found))) {
        ends[0] = hit_array(env, supporting, found);
        ends[1] = ends[0] == NULL ? NULL : hit_array(env, opposing, found);
        hit_array_class = ends[1] == NULL ? NULL : (*env)->FindClass(env, "[LSegInf$Hit;");
        if (hit_array_class != NULL) {
            result = (*env)->NewObjectArray(env, 2, hit_array_class, NULL);
        }
        if (result != NULL) {
            (*env)->SetObjectArrayElement(env, result, 0, ends[0]);
            (*env)->SetObjectArrayElement(env, result, 1, ends[1]);
        }
    }
    free(supporting);
    free(opposing);
    release_sequence(env, &seq);
    return result;
}

JNIEXPORT jdoubleArray JNICALL Java_SegInf_queryScores(JNIEnv *env, jclass cls, jlong query,
                                                       jfloatArray features, jintArray labels,
                                                       jint first, jint last) {
    struct sequence seq;
    seginf_query *q = HANDLE(seginf_query, query);
    size_t len = seginf_query_num_items(q);
    double *scores = NULL;
    jdoubleArray result = NULL;
    (void)cls;
    if (first < 0 || last < 0) {
        throw_illegal(env, "first and last must not be negative");
        return NULL;
    }
    if (len > (size_t)INT32_MAX) {
        throw_illegal(env, "more items than a Java array holds");
        return NULL;
    }
    if (!borrow_sequence(env, features, labels, &seq)) {
        release_sequence(env, &seq);
        return NULL;
    }
    scores = malloc((len > 0 ? len : 1) * sizeof *scores);
    if (scores == NULL) {
        throw_java(env, "java/lang/OutOfMemoryError", "scores");
    } else if (!failed(env, seginf_query_scores(q, seq.features.data, seq.n,
                                                (const uint32_t *)seq.labels, (size_t)first,
                                                (size_t)last, scores, len))) {
        result = (*env)->NewDoubleArray(env, (jsize)len);
        if (result != NULL) {
            (*env)->SetDoubleArrayRegion(env, result, 0, (jsize)len, scores);
        }
    }
    free(scores);
    release_sequence(env, &seq);
    return result;
}

JNIEXPORT void JNICALL Java_SegInf_queryFree(JNIEnv *env, jclass cls, jlong query) {
    (void)env;
    (void)cls;
    seginf_query_free(HANDLE(seginf_query, query));
}

/* ---- the CPU's kernels ----------------------------------------------------------------- */

JNIEXPORT jboolean JNICALL Java_SegInf_tilesAvailable(JNIEnv *env, jclass cls) {
    (void)env;
    (void)cls;
    return seginf_tiles_available() ? JNI_TRUE : JNI_FALSE;
}
