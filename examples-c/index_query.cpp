// index_query.cpp -- the seginf index and queries from C++17 through a small RAII wrapper:
// move-only handles (std::unique_ptr with custom deleters) for the CRF, build options, the
// builder, the index and the query, and errors as exceptions that carry the status name and the
// library's message.
//
// The program builds an index with half-precision (F16) feature storage from one batch of
// training sequences, saves it, reopens it, ranks training tokens for an entity segment and for
// a batch of segments, and shows that opening the file with another CRF fails with
// SEGINF_ERR_MODEL_MISMATCH. Output is "key value ...", doubles as %.17g, a hit as
// "doc_id position label score"; tests/c_abi.rs recomputes every line with a Rust F16 index.
//
// Usage: index_query_cpp [scratch-dir]   (the index is written there; default ".")

#include "seginf.h"

#include <cstdint>
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace seginf {

// A failed seginf call: what() is "SEGINF_ERR_...: message".
class Error : public std::runtime_error {
  public:
    Error(seginf_status status, const std::string &message)
        : std::runtime_error(std::string(seginf_status_name(status)) + ": " + message),
          status_(status), message_(message) {}

    seginf_status status() const noexcept { return status_; }
    const char *name() const noexcept { return seginf_status_name(status_); }
    const std::string &message() const noexcept { return message_; }

  private:
    seginf_status status_;
    std::string message_;
};

// The message of the last failed call on this thread, however long.
inline std::string last_error_message() {
    size_t len = 0;
    seginf_last_error_message(nullptr, 0, &len);
    std::vector<char> buf(len + 1);
    seginf_last_error_message(buf.data(), buf.size(), nullptr);
    return std::string(buf.data(), len);
}

inline void check(seginf_status status) {
    if (status != SEGINF_OK) {
        throw Error(status, last_error_message());
    }
}

// A unique_ptr that frees a seginf handle with its one _free function.
template <typename T, void (*Free)(T *)> struct Deleter {
    void operator()(T *p) const noexcept { Free(p); }
};
template <typename T, void (*Free)(T *)> using Handle = std::unique_ptr<T, Deleter<T, Free>>;

// One labelled sequence: features n x d (row-major), labels n.
struct Sequence {
    uint64_t doc_id;
    std::vector<float> features;
    std::vector<uint32_t> labels;
};

// The segment [first, last] (inclusive) of sequence `seq` of a batch.
struct Segment {
    size_t seq, first, last;
};

// Supporting (most negative score first) and opposing (most positive first) hits.
struct Hits {
    std::vector<seginf_hit> supporting, opposing;
};

class Crf {
  public:
    // bias, start, end: empty for "absent".
    static Crf from_arrays(size_t num_labels, size_t feature_dim, const std::vector<float> &weights,
                           const std::vector<float> &bias, const std::vector<float> &transitions,
                           const std::vector<float> &start, const std::vector<float> &end) {
        auto optional = [](const std::vector<float> &v) { return v.empty() ? nullptr : v.data(); };
        seginf_crf *raw = nullptr;
        check(seginf_crf_new(num_labels, feature_dim, weights.data(), optional(bias),
                             transitions.data(), optional(start), optional(end), &raw));
        return Crf(raw);
    }

    const seginf_crf *get() const noexcept { return handle_.get(); }

  private:
    explicit Crf(seginf_crf *raw) noexcept : handle_(raw) {}
    Handle<seginf_crf, seginf_crf_free> handle_;
};

class IndexOptions {
  public:
    IndexOptions() {
        seginf_index_options *raw = nullptr;
        check(seginf_index_options_new(&raw));
        handle_.reset(raw);
    }

    IndexOptions &storage(seginf_storage storage) {
        check(seginf_index_options_set_storage(handle_.get(), storage));
        return *this;
    }

    IndexOptions &expected_tokens(uint64_t tokens) {
        check(seginf_index_options_set_expected_tokens(handle_.get(), tokens));
        return *this;
    }

    const seginf_index_options *get() const noexcept { return handle_.get(); }

  private:
    Handle<seginf_index_options, seginf_index_options_free> handle_;
};

class Index {
  public:
    // Opens a saved index for `crf`, memory-mapped.
    static Index open(const std::string &path, const Crf &crf) {
        seginf_index *raw = nullptr;
        check(seginf_index_open(path.c_str(), crf.get(), &raw));
        return Index(raw, seginf_crf_feature_dim(crf.get()));
    }

    void save(const std::string &path) const { check(seginf_index_save(handle_.get(), path.c_str())); }

    size_t num_tokens() const noexcept { return seginf_index_num_tokens(handle_.get()); }
    size_t num_sequences() const noexcept { return seginf_index_num_sequences(handle_.get()); }
    int32_t storage() const noexcept { return seginf_index_storage(handle_.get()); }
    size_t feature_dim() const noexcept { return feature_dim_; }
    const seginf_index *get() const noexcept { return handle_.get(); }

  private:
    friend class IndexBuilder;
    Index(seginf_index *raw, size_t feature_dim) noexcept : feature_dim_(feature_dim), handle_(raw) {}
    size_t feature_dim_;
    Handle<seginf_index, seginf_index_free> handle_;
};

// Flattened batch arrays, as seginf_index_builder_add_batch and seginf_query_run_batch take them.
struct Flat {
    std::vector<uint64_t> doc_ids;
    std::vector<float> features;
    std::vector<uint32_t> labels;
    std::vector<size_t> lengths;

    Flat(const std::vector<Sequence> &seqs, size_t feature_dim) {
        for (const auto &s : seqs) {
            if (s.features.size() != s.labels.size() * feature_dim) {
                throw std::invalid_argument("features are not n x feature_dim");
            }
            doc_ids.push_back(s.doc_id);
            features.insert(features.end(), s.features.begin(), s.features.end());
            labels.insert(labels.end(), s.labels.begin(), s.labels.end());
            lengths.push_back(s.labels.size());
        }
    }
};

class IndexBuilder {
  public:
    IndexBuilder(const Crf &crf, const IndexOptions &options)
        : feature_dim_(seginf_crf_feature_dim(crf.get())) {
        seginf_index_builder *raw = nullptr;
        check(seginf_index_builder_new(crf.get(), options.get(), &raw));
        handle_.reset(raw);
    }

    void add_batch(const std::vector<Sequence> &seqs) {
        Flat flat(seqs, feature_dim_);
        check(seginf_index_builder_add_batch(handle_.get(), flat.doc_ids.data(),
                                             flat.features.data(), flat.labels.data(),
                                             flat.lengths.data(), seqs.size()));
    }

    size_t num_tokens() const noexcept { return seginf_index_builder_num_tokens(handle_.get()); }

    // Consumes the builder (seginf frees it on success and on error alike).
    Index finish() && {
        seginf_index *raw = nullptr;
        check(seginf_index_builder_finish(handle_.release(), &raw));
        return Index(raw, feature_dim_);
    }

  private:
    size_t feature_dim_;
    Handle<seginf_index_builder, seginf_index_builder_free> handle_;
};

class Query {
  public:
    explicit Query(const Index &index) : feature_dim_(index.feature_dim()) {
        seginf_query *raw = nullptr;
        check(seginf_query_new(index.get(), &raw));
        handle_.reset(raw);
    }

    Query &granularity(seginf_granularity g) {
        check(seginf_query_set_granularity(handle_.get(), g));
        return *this;
    }

    Hits run(const Sequence &test, size_t first, size_t last, size_t k) {
        Hits hits{std::vector<seginf_hit>(k), std::vector<seginf_hit>(k)};
        size_t found = 0;
        check(seginf_query_run(handle_.get(), test.features.data(), test.labels.size(),
                               test.labels.data(), first, last, hits.supporting.data(),
                               hits.opposing.data(), k, &found));
        hits.supporting.resize(found);
        hits.opposing.resize(found);
        return hits;
    }

    std::vector<Hits> run_batch(const std::vector<Sequence> &tests,
                                const std::vector<Segment> &segments, size_t k) {
        Flat flat(tests, feature_dim_);
        std::vector<size_t> seq, first, last, found(segments.size());
        for (const auto &s : segments) {
            seq.push_back(s.seq);
            first.push_back(s.first);
            last.push_back(s.last);
        }
        std::vector<seginf_hit> supporting(segments.size() * k), opposing(segments.size() * k);
        check(seginf_query_run_batch(handle_.get(), flat.features.data(), flat.labels.data(),
                                     flat.lengths.data(), tests.size(), seq.data(), first.data(),
                                     last.data(), segments.size(), supporting.data(),
                                     opposing.data(), k, found.data()));
        std::vector<Hits> out;
        for (size_t j = 0; j < segments.size(); j++) {
            auto at = [&](const std::vector<seginf_hit> &v) {
                return std::vector<seginf_hit>(v.begin() + j * k, v.begin() + j * k + found[j]);
            };
            out.push_back({at(supporting), at(opposing)});
        }
        return out;
    }

  private:
    size_t feature_dim_;
    Handle<seginf_query, seginf_query_free> handle_;
};

}  // namespace seginf

namespace {

constexpr size_t C = 5;  // O, B-PER, I-PER, B-LOC, I-LOC
constexpr size_t D = 4;
constexpr size_t S = 10;  // training sequences
constexpr size_t K = 4;   // hits per end

// (k - offset) / denominator. The parameters are dyadic (exact in float); the features are
// sevenths, correctly rounded to float by the division (so the Rust test gets the same bits),
// and not exact in half precision, so F16 storage really rounds them.
float ratio(size_t k, int offset, float denominator) {
    return static_cast<float>(static_cast<int>(k) - offset) / denominator;
}

void print_hits(const std::string &key, const seginf::Hits &hits) {
    std::printf("%s_found %zu\n", key.c_str(), hits.supporting.size());
    const std::pair<const char *, const std::vector<seginf_hit> *> ends[] = {
        {"supporting", &hits.supporting}, {"opposing", &hits.opposing}};
    for (const auto &end : ends) {
        std::printf("%s_%s", key.c_str(), end.first);
        for (const seginf_hit &h : *end.second) {
            std::printf(" %llu %u %u %.17g", static_cast<unsigned long long>(h.doc_id),
                        static_cast<unsigned>(h.position), static_cast<unsigned>(h.label), h.score);
        }
        std::printf("\n");
    }
}

seginf::Crf make_crf(float weight_shift) {
    std::vector<float> weights(C * D), bias(C), transitions(C * C), start(C);
    for (size_t i = 0; i < C; i++) {
        for (size_t k = 0; k < D; k++) {
            weights[i * D + k] = ratio((i * 3 + k * 5 + 1) % 10, 5, 8.0f);
        }
        for (size_t j = 0; j < C; j++) {
            transitions[i * C + j] = ratio((i * 4 + j * 7 + 3) % 10, 5, 8.0f);
        }
        bias[i] = ratio(i % 3, 1, 8.0f);
        start[i] = ratio((2 * i) % 5, 2, 8.0f);
    }
    weights[0] += weight_shift;
    // No end scores: that block is absent.
    return seginf::Crf::from_arrays(C, D, weights, bias, transitions, start, {});
}

std::vector<seginf::Sequence> training_set() {
    std::vector<seginf::Sequence> seqs;
    for (size_t i = 0; i < S; i++) {
        seginf::Sequence s{500 + 3 * i, {}, {}};
        size_t n = 2 + (2 * i) % 5;  // 2..6 tokens
        for (size_t t = 0; t < n; t++) {
            for (size_t k = 0; k < D; k++) {
                s.features.push_back(ratio((i * 5 + t * 3 + k * 11 + 2) % 19, 9, 7.0f));
            }
            s.labels.push_back(static_cast<uint32_t>((i + 3 * t + (i * t) % 2) % C));
        }
        seqs.push_back(std::move(s));
    }
    return seqs;
}

std::vector<seginf::Sequence> test_set() {
    // O B-PER I-PER O B-LOC | B-LOC I-LOC O B-PER
    const std::vector<std::vector<uint32_t>> labels = {{0, 1, 2, 0, 3}, {3, 4, 0, 1}};
    std::vector<seginf::Sequence> seqs;
    for (size_t s = 0; s < labels.size(); s++) {
        seginf::Sequence seq{s, {}, labels[s]};
        for (size_t t = 0; t < labels[s].size(); t++) {
            for (size_t k = 0; k < D; k++) {
                seq.features.push_back(ratio((s * 13 + t * 5 + k * 3 + 1) % 17, 8, 7.0f));
            }
        }
        seqs.push_back(std::move(seq));
    }
    return seqs;
}

int run(const std::string &scratch_dir) {
    const std::string path = scratch_dir + "/index_query_f16.seginf";
    seginf::Crf crf = make_crf(0.0f);
    const auto train = training_set();
    const auto tests = test_set();

    seginf::IndexOptions options;
    options.storage(SEGINF_STORAGE_F16).expected_tokens(0);
    seginf::IndexBuilder builder(crf, options);
    builder.add_batch(train);
    std::printf("built_tokens %zu\n", builder.num_tokens());
    seginf::Index built = std::move(builder).finish();
    std::printf("built %zu %zu %d\n", built.num_tokens(), built.num_sequences(),
                static_cast<int>(built.storage()));
    built.save(path);

    // Handles move; the index reopened from the file replaces the one built in memory.
    seginf::Index index = seginf::Index::open(path, crf);
    built = std::move(index);
    std::printf("reopened %zu %zu %d\n", built.num_tokens(), built.num_sequences(),
                static_cast<int>(built.storage()));

    seginf::Query query(built);
    print_hits("entity", query.run(tests[0], 1, 2, K));
    const std::vector<seginf::Segment> segments = {{0, 3, 3}, {1, 0, 1}, {1, 2, 3}};
    auto batch = query.run_batch(tests, segments, K);
    for (size_t j = 0; j < batch.size(); j++) {
        print_hits("batch_" + std::to_string(j), batch[j]);
    }
    query.granularity(SEGINF_GRANULARITY_INSTANCE);
    print_hits("instance", query.run(tests[1], 0, 1, 2));

    // The file remembers which CRF it was built for.
    seginf::Crf other = make_crf(0.125f);
    try {
        seginf::Index::open(path, other);
        std::printf("error_model_mismatch no error\n");
    } catch (const seginf::Error &e) {
        std::printf("error_model_mismatch %s %s\n", e.name(), e.message().c_str());
    }
    return 0;
}

}  // namespace

int main(int argc, char **argv) {
    try {
        return run(argc > 1 ? argv[1] : ".");
    } catch (const std::exception &e) {
        std::fprintf(stderr, "index_query.cpp: %s\n", e.what());
        return 1;
    }
}
