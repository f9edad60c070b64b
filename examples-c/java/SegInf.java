/*
 * SegInf.java -- a small Java binding of seginf through JNI (the glue is seginf_jni.c, which
 * uses only seginf.h): a CRF, an index builder, an index (built, saved, reopened) and a query
 * that returns the supporting and opposing training tokens of a test segment.
 *
 * Handles are AutoCloseable: close them (try-with-resources) to free the native objects; a
 * closed handle throws IllegalStateException. As in C, an index and a CRF may be shared across
 * threads, a query is one thread's. Failed library calls throw SegInfException with the
 * status name (e.g. "SEGINF_ERR_LABEL_OUT_OF_RANGE") and the library's message; arrays of the
 * wrong length throw IllegalArgumentException before the library is called.
 *
 * Labels are Java ints (a uint32_t in C: a negative label is out of range); features are
 * float[] of n x d values, row-major, as in the C API.
 */
public final class SegInf {
    static {
        System.loadLibrary("seginf_jni");
    }

    private SegInf() {}

    /** seginf_storage values. */
    public static final int STORAGE_F32 = 0, STORAGE_F16 = 1, STORAGE_INT8 = 2;

    /** seginf_granularity values. */
    public static final int GRANULARITY_TOKEN = 0, GRANULARITY_INSTANCE = 1,
            GRANULARITY_NEAREST_DOT = 2, GRANULARITY_NEAREST_COSINE = 3;

    /** A failed library call: the seginf_status name and the library's message. */
    public static final class SegInfException extends RuntimeException {
        private static final long serialVersionUID = 1L;
        public final String status;

        SegInfException(String status, String message) {
            super(status + ": " + message);
            this.status = status;
        }

        /** The library's message alone. */
        public String libraryMessage() {
            return getMessage().substring(status.length() + 2);
        }
    }

    /**
     * One ranked training item: doc_id, position in its sequence, gold label, score. A hit of
     * instance granularity is a whole sequence: position and label are -1 (UINT32_MAX in C).
     */
    public static final class Hit {
        public final long docId;
        public final int position;
        public final int label;
        public final double score;

        Hit(long docId, int position, int label, double score) {
            this.docId = docId;
            this.position = position;
            this.label = label;
            this.score = score;
        }
    }

    /** The two ends of a query's result, each best first. */
    public static final class Hits {
        public final Hit[] supporting;
        public final Hit[] opposing;

        Hits(Hit[] supporting, Hit[] opposing) {
            this.supporting = supporting;
            this.opposing = opposing;
        }
    }

    /** A native handle freed once by close(). */
    private abstract static class Handle implements AutoCloseable {
        private long handle;

        Handle(long handle) {
            this.handle = handle;
        }

        long get() {
            if (handle == 0) {
                throw new IllegalStateException(getClass().getSimpleName() + " is closed");
            }
            return handle;
        }

        /** Hands the pointer over (the native side consumed it): close() then frees nothing. */
        long take() {
            long h = get();
            handle = 0;
            return h;
        }

        abstract void free(long handle);

        @Override
        public void close() {
            if (handle != 0) {
                free(handle);
                handle = 0;
            }
        }
    }

    /** A linear-chain CRF (seginf_crf). */
    public static final class Crf extends Handle {
        public final int numLabels, featureDim;

        /**
         * weights: numLabels x featureDim; transitions: numLabels x numLabels, [from*C + to];
         * bias, start, end: numLabels each, or null for none.
         */
        public Crf(int numLabels, int featureDim, float[] weights, float[] bias,
                float[] transitions, float[] start, float[] end) {
            super(crfNew(numLabels, featureDim, weights, bias, transitions, start, end));
            this.numLabels = numLabels;
            this.featureDim = featureDim;
        }

        @Override
        void free(long h) {
            crfFree(h);
        }
    }

    /** Checks that `features` holds labels.length rows of `dim` values. */
    private static void checkShape(int dim, float[] features, int[] labels) {
        if (features == null || labels == null) {
            throw new IllegalArgumentException("features and labels must not be null");
        }
        if ((long) features.length != (long) labels.length * dim) {
            throw new IllegalArgumentException("features hold " + features.length
                    + " values, not " + labels.length + " tokens x " + dim);
        }
    }

    /** Collects training sequences into an index (seginf_index_builder). */
    public static final class IndexBuilder extends Handle {
        private final Crf crf;

        public IndexBuilder(Crf crf, int storage) {
            super(builderNew(crf.get(), storage));
            this.crf = crf;
        }

        /** Adds one training sequence: its caller id, features (n x d) and gold labels (n). */
        public void add(long docId, float[] features, int[] labels) {
            checkShape(crf.featureDim, features, labels);
            builderAdd(get(), docId, features, labels);
        }

        /** The index; this builder is consumed (closed) whether or not it succeeds. */
        public Index finish() {
            return new Index(crf, builderFinish(take()));
        }

        @Override
        void free(long h) {
            builderFree(h);
        }
    }

    /** A token-gradient index (seginf_index). */
    public static final class Index extends Handle {
        final Crf crf;

        Index(Crf crf, long handle) {
            super(handle);
            this.crf = crf;
        }

        /** Opens a saved index memory-mapped, for the CRF it was built with. */
        public static Index open(String path, Crf crf) {
            return new Index(crf, indexOpen(path, crf.get()));
        }

        /** Writes the index to one file, atomically. */
        public void save(String path) {
            indexSave(get(), path);
        }

        public long numTokens() {
            return indexNumTokens(get());
        }

        public long numSequences() {
            return indexNumSequences(get());
        }

        /** A STORAGE_* value. */
        public int storage() {
            return indexStorage(get());
        }

        @Override
        void free(long h) {
            indexFree(h);
        }
    }

    /** A query on an index (seginf_query): one thread's. */
    public static final class Query extends Handle {
        private final Index index;

        public Query(Index index) {
            super(queryNew(index.get()));
            this.index = index;
        }

        /** A GRANULARITY_* value. */
        public void setGranularity(int granularity) {
            querySetGranularity(get(), granularity);
        }

        /**
         * The k training items that most support (most negative scores) and most oppose (most
         * positive) the labels of test segment [first, last] of a sequence (features n x d,
         * labels n).
         */
        public Hits run(float[] features, int[] labels, int first, int last, int k) {
            checkShape(index.crf.featureDim, features, labels);
            if (k <= 0) {
                throw new IllegalArgumentException("k must be positive, not " + k);
            }
            Hit[][] ends = queryRun(get(), features, labels, first, last, k);
            return new Hits(ends[0], ends[1]);
        }

        /** Every item's score against the segment, in index order. */
        public double[] scores(float[] features, int[] labels, int first, int last) {
            checkShape(index.crf.featureDim, features, labels);
            return queryScores(get(), features, labels, first, last);
        }

        @Override
        void free(long h) {
            queryFree(h);
        }
    }

    // ---- the native methods (seginf_jni.c) ---------------------------------------------------

    private static native long crfNew(int numLabels, int featureDim, float[] weights,
            float[] bias, float[] transitions, float[] start, float[] end);

    private static native void crfFree(long crf);

    private static native long builderNew(long crf, int storage);

    private static native void builderAdd(long builder, long docId, float[] features,
            int[] labels);

    private static native long builderFinish(long builder);

    private static native void builderFree(long builder);

    private static native void indexSave(long index, String path);

    private static native long indexOpen(String path, long crf);

    private static native long indexNumTokens(long index);

    private static native long indexNumSequences(long index);

    private static native int indexStorage(long index);

    private static native void indexFree(long index);

    private static native long queryNew(long index);

    private static native void querySetGranularity(long query, int granularity);

    private static native Hit[][] queryRun(long query, float[] features, int[] labels,
            int first, int last, int k);

    private static native double[] queryScores(long query, float[] features, int[] labels,
            int first, int last);

    private static native void queryFree(long query);

    /**
     * Whether this process runs the AMX tile kernels (seginf_tiles_available): results are the
     * same either way. The first call asks Linux for the tile state (see the header).
     */
    public static native boolean tilesAvailable();
}
