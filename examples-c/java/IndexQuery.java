/*
 * IndexQuery.java -- a Java user of seginf through SegInf.java (JNI): the model, training set
 * and test sequences of index_query.c, an f32 index built sequence by sequence, saved and
 * reopened, then which training tokens support or oppose the labels of a single token and of
 * a 2-token entity, whole training sequences (instance influence), every token's score, and
 * how errors reach Java (a label out of range, an index opened with another model, a features
 * array of the wrong length). Then the same at an encoder's width (64 features, int8 and f16
 * indexes, a 6-token segment): where the CPU has Intel AMX, the tile kernels run inside the
 * JVM ("wide_tiles" says whether they do).
 *
 * Output: one result per line, "key value value ...", as index_query.c prints them (doubles
 * by Double.toString, which reads back exactly; positions and labels unsigned, as C's
 * UINT32_MAX); tests/c_abi.rs recomputes every line through the Rust API.
 *
 * Usage: java -Djava.library.path=<dir of libseginf_jni.so> IndexQuery [scratch-dir]
 */
import java.io.File;

public final class IndexQuery {
    static final int C = 4, D = 5, S = 12, WIDE_D = 64, WIDE_S = 24;

    /** (k - offset) / denominator, as index_query.c's dyadic(). */
    static float dyadic(int k, int offset, float denominator) {
        return (float) (k - offset) / denominator;
    }

    /** index_query.c's model; `shift` is added to the first weight (another model). */
    static SegInf.Crf model(float shift) {
        return model(D, shift);
    }

    /** The same formulas for `d` features. */
    static SegInf.Crf model(int d, float shift) {
        float[] weights = new float[C * d], transitions = new float[C * C];
        float[] bias = new float[C], start = new float[C], end = new float[C];
        for (int i = 0; i < C; i++) {
            for (int j = 0; j < d; j++) {
                weights[i * d + j] = dyadic((i * 7 + j * 3 + 2) % 11, 5, 8.0f);
            }
            for (int j = 0; j < C; j++) {
                transitions[i * C + j] = dyadic((i * 5 + j * 3 + 1) % 9, 4, 8.0f);
            }
            bias[i] = dyadic((i * 5 + 1) % 4, 2, 8.0f);
            start[i] = dyadic((2 * i + 1) % 5, 2, 8.0f);
            end[i] = dyadic((3 * i + 2) % 5, 2, 8.0f);
        }
        weights[0] += shift;
        return new SegInf.Crf(C, d, weights, bias, transitions, start, end);
    }

    static float[] trainFeatures(int i, int n, int d) {
        float[] x = new float[n * d];
        for (int t = 0; t < n; t++) {
            for (int j = 0; j < d; j++) {
                x[t * d + j] = dyadic((i * 7 + t * 5 + j * 3 + i * t + 1) % 17, 8, 4.0f);
            }
        }
        return x;
    }

    static int[] trainLabels(int i, int n) {
        int[] y = new int[n];
        for (int t = 0; t < n; t++) {
            y[t] = (i + 2 * t + (i * t) % 3) % C;
        }
        return y;
    }

    static final int[][] TEST_LABELS = {{0, 1, 2, 0, 3, 0}, {1, 2, 2, 0, 3}};

    static float[] testFeatures(int s, int d) {
        int n = TEST_LABELS[s].length;
        float[] x = new float[n * d];
        for (int t = 0; t < n; t++) {
            for (int j = 0; j < d; j++) {
                x[t * d + j] = dyadic((s * 11 + t * 3 + j * 7 + s * t + 4) % 15, 7, 4.0f);
            }
        }
        return x;
    }

    static void printHits(String key, SegInf.Hits hits) {
        System.out.println(key + "_found " + hits.supporting.length);
        printEnd(key + "_supporting", hits.supporting);
        printEnd(key + "_opposing", hits.opposing);
    }

    static void printEnd(String key, SegInf.Hit[] hits) {
        StringBuilder line = new StringBuilder(key);
        for (SegInf.Hit h : hits) {
            line.append(' ').append(h.docId).append(' ')
                    .append(Integer.toUnsignedString(h.position)).append(' ')
                    .append(Integer.toUnsignedString(h.label)).append(' ')
                    .append(Double.toString(h.score));
        }
        System.out.println(line);
    }

    public static void main(String[] args) {
        String dir = args.length > 0 ? args[0] : ".";
        String path = new File(dir, "index_query_java.seginf").getPath();
        float[] t0 = testFeatures(0, D), t1 = testFeatures(1, D);
        try (SegInf.Crf crf = model(0.0f); SegInf.Crf other = model(0.125f)) {
            try (SegInf.IndexBuilder builder = new SegInf.IndexBuilder(crf, SegInf.STORAGE_F32)) {
                for (int i = 0; i < S; i++) {
                    int n = 3 + (3 * i) % 5;
                    builder.add(100 + i, trainFeatures(i, n, D), trainLabels(i, n));
                }
                try (SegInf.Index built = builder.finish()) {
                    System.out.println("tokens_built " + built.numTokens());
                    built.save(path);
                }
            }
            try (SegInf.Index index = SegInf.Index.open(path, crf);
                    SegInf.Query query = new SegInf.Query(index)) {
                System.out.println("reopened " + index.numTokens() + " " + index.numSequences()
                        + " " + index.storage());
                printHits("token_single", query.run(t0, TEST_LABELS[0], 3, 3, 5));
                printHits("token_entity", query.run(t0, TEST_LABELS[0], 1, 2, 5));
                query.setGranularity(SegInf.GRANULARITY_INSTANCE);
                printHits("instance", query.run(t0, TEST_LABELS[0], 1, 2, 3));
                query.setGranularity(SegInf.GRANULARITY_TOKEN);
                StringBuilder scores = new StringBuilder("scores");
                for (double s : query.scores(t1, TEST_LABELS[1], 0, 2)) {
                    scores.append(' ').append(Double.toString(s));
                }
                System.out.println(scores);

                // Errors: the library's status and message, and Java's own checks.
                int[] badLabels = TEST_LABELS[1].clone();
                badLabels[1] = 9;
                try {
                    query.run(t1, badLabels, 0, 2, 5);
                    System.out.println("error_label none");
                } catch (SegInf.SegInfException e) {
                    System.out.println("error_label " + e.status + " " + e.libraryMessage());
                }
                try {
                    query.run(new float[D], TEST_LABELS[1], 0, 0, 5);
                    System.out.println("error_length none");
                } catch (IllegalArgumentException e) {
                    System.out.println("error_length " + e.getClass().getSimpleName());
                }
            }
            try (SegInf.Index wrong = SegInf.Index.open(path, other)) {
                System.out.println("error_model none " + wrong.numTokens());
            } catch (SegInf.SegInfException e) {
                System.out.println("error_model " + e.status + " " + e.libraryMessage());
            }
        }
        wide();
    }

    /** 64 features: 24 training sequences of 8 to 12 tokens, test sequence 0's first 6. */
    static void wide() {
        System.out.println("wide_tiles " + (SegInf.tilesAvailable() ? 1 : 0));
        float[] test = testFeatures(0, WIDE_D);
        String[] names = {"wide_int8", "wide_f16"};
        int[] storages = {SegInf.STORAGE_INT8, SegInf.STORAGE_F16};
        try (SegInf.Crf crf = model(WIDE_D, 0.0f)) {
            for (int s = 0; s < storages.length; s++) {
                try (SegInf.IndexBuilder builder = new SegInf.IndexBuilder(crf, storages[s])) {
                    for (int i = 0; i < WIDE_S; i++) {
                        int n = 8 + i % 5;
                        builder.add(200 + i, trainFeatures(i, n, WIDE_D), trainLabels(i, n));
                    }
                    try (SegInf.Index index = builder.finish();
                            SegInf.Query query = new SegInf.Query(index)) {
                        printHits(names[s], query.run(test, TEST_LABELS[0], 0, 5, 5));
                    }
                }
            }
        }
    }
}
