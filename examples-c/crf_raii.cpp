// crf_raii.cpp -- seginf from C++17 through a small RAII wrapper: move-only handles that free
// themselves, and errors as exceptions that carry the status name and the library's message.
//
// The program builds a CRF without bias or end scores, adds BIO constraints, prints marginals
// and the conditional loss CL(a, b) of every segment, round-trips the parameters through a
// safetensors file (custom tensor names, transitions stored [to][from]), and shows how bad
// calls surface as seginf::Error. Output is "key value ...", doubles as %.17g; tests/c_abi.rs
// recomputes every line in Rust.
//
// Usage: crf_raii [scratch-dir]   (the safetensors file is written there; default ".")

#include "seginf.h"

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
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

// Owns a seginf_load_options; setters chain.
class LoadOptions {
  public:
    LoadOptions() {
        seginf_load_options *raw = nullptr;
        check(seginf_load_options_new(&raw));
        handle_.reset(raw);
    }

    LoadOptions &tensor_name(seginf_param param, const std::string &name) {
        check(seginf_load_options_set_tensor_name(handle_.get(), param, name.c_str()));
        return *this;
    }

    LoadOptions &transitions_to_from(bool to_from) {
        check(seginf_load_options_set_transitions_to_from(handle_.get(), to_from ? 1 : 0));
        return *this;
    }

    const seginf_load_options *get() const noexcept { return handle_.get(); }

  private:
    struct Free {
        void operator()(seginf_load_options *p) const noexcept { seginf_load_options_free(p); }
    };
    std::unique_ptr<seginf_load_options, Free> handle_;
};

// Owns a seginf_crf. Move-only (unique_ptr); a moved-from Crf holds NULL, which every call
// reports as SEGINF_ERR_NULL_ARGUMENT rather than crashing.
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

    static Crf load(const std::string &path, const LoadOptions &options) {
        seginf_crf *raw = nullptr;
        check(seginf_crf_load_safetensors(path.c_str(), options.get(), &raw));
        return Crf(raw);
    }

    Crf with_constraints(seginf_tag_scheme scheme, const std::vector<std::string> &names) const {
        std::vector<const char *> c_names;
        for (const auto &name : names) {
            c_names.push_back(name.c_str());
        }
        seginf_crf *raw = nullptr;
        check(seginf_crf_with_constraints(handle_.get(), scheme, c_names.data(), c_names.size(),
                                          &raw));
        return Crf(raw);
    }

    size_t num_labels() const noexcept { return seginf_crf_num_labels(handle_.get()); }
    size_t feature_dim() const noexcept { return seginf_crf_feature_dim(handle_.get()); }
    size_t num_params() const noexcept { return seginf_crf_num_params(handle_.get()); }

    std::vector<double> params() const {
        std::vector<double> out(num_params());
        check(seginf_crf_get_params(handle_.get(), out.data(), out.size()));
        return out;
    }

    std::pair<std::vector<uint32_t>, double> viterbi(const std::vector<float> &features) const {
        std::vector<uint32_t> path(tokens(features));
        double score = 0.0;
        check(seginf_crf_viterbi(handle_.get(), features.data(), path.size(), path.data(), &score));
        return {path, score};
    }

    double log_likelihood(const std::vector<float> &features,
                          const std::vector<uint32_t> &labels) const {
        double out = 0.0;
        check(seginf_crf_log_likelihood(handle_.get(), features.data(), tokens(features, labels),
                                        labels.data(), &out));
        return out;
    }

    // n x C, row-major.
    std::vector<double> marginals(const std::vector<float> &features) const {
        size_t n = tokens(features);
        std::vector<double> out(n * num_labels());
        check(seginf_crf_marginals(handle_.get(), features.data(), n, out.data()));
        return out;
    }

    // (n-1) x C x C.
    std::vector<double> pairwise_marginals(const std::vector<float> &features) const {
        size_t n = tokens(features), c = num_labels();
        std::vector<double> out((n - 1) * c * c);
        check(seginf_crf_pairwise_marginals(handle_.get(), features.data(), n, out.data()));
        return out;
    }

    // CL(first, last), segment inclusive.
    double segment_loss(const std::vector<float> &features, const std::vector<uint32_t> &labels,
                        size_t first, size_t last) const {
        double out = 0.0;
        check(seginf_crf_segment_loss(handle_.get(), features.data(), tokens(features, labels),
                                      labels.data(), first, last, &out));
        return out;
    }

  private:
    explicit Crf(seginf_crf *raw) noexcept : handle_(raw) {}

    // n from the features' length (a wrapper-level check: seginf trusts the lengths it gets).
    size_t tokens(const std::vector<float> &features) const {
        size_t d = feature_dim();
        if (d == 0 || features.size() % d != 0) {
            throw std::invalid_argument("features are not n x feature_dim");
        }
        return features.size() / d;
    }

    size_t tokens(const std::vector<float> &features, const std::vector<uint32_t> &labels) const {
        size_t n = tokens(features);
        if (labels.size() != n) {
            throw std::invalid_argument("labels and features disagree on n");
        }
        return n;
    }

    struct Free {
        void operator()(seginf_crf *p) const noexcept { seginf_crf_free(p); }
    };
    std::unique_ptr<seginf_crf, Free> handle_;
};

}  // namespace seginf

namespace {

constexpr size_t C = 5;  // O, B-PER, I-PER, B-LOC, I-LOC
constexpr size_t D = 3;
constexpr size_t N = 7;

void print(const std::string &key, const std::vector<double> &values) {
    std::printf("%s", key.c_str());
    for (double v : values) {
        std::printf(" %.17g", v);
    }
    std::printf("\n");
}

void print_error(const std::string &key, const seginf::Error &e) {
    std::printf("%s %s %s\n", key.c_str(), e.name(), e.message().c_str());
}

// Little-endian bytes of a float, whatever the host's byte order.
void put_f32(std::string &out, float value) {
    uint32_t bits;
    std::memcpy(&bits, &value, sizeof bits);
    for (int shift = 0; shift < 32; shift += 8) {
        out.push_back(static_cast<char>((bits >> shift) & 0xff));
    }
}

struct Tensor {
    std::string name;
    std::vector<size_t> shape;
    std::vector<float> values;
};

// A minimal safetensors writer: u64 header length, JSON header (padded to 8 bytes), data.
void write_safetensors(const std::string &path, const std::vector<Tensor> &tensors) {
    std::string header = "{", data;
    for (const auto &t : tensors) {
        size_t begin = data.size();
        for (float v : t.values) {
            put_f32(data, v);
        }
        if (header.size() > 1) {
            header += ",";
        }
        header += "\"" + t.name + "\":{\"dtype\":\"F32\",\"shape\":[";
        for (size_t i = 0; i < t.shape.size(); i++) {
            header += (i ? "," : "") + std::to_string(t.shape[i]);
        }
        header += "],\"data_offsets\":[" + std::to_string(begin) + "," +
                  std::to_string(data.size()) + "]}";
    }
    header += "}";
    header.append((8 - header.size() % 8) % 8, ' ');
    std::string file;
    for (int shift = 0; shift < 64; shift += 8) {
        file.push_back(static_cast<char>((static_cast<uint64_t>(header.size()) >> shift) & 0xff));
    }
    file += header + data;
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(file.data(), static_cast<std::streamsize>(file.size()));
    if (!out) {
        throw std::runtime_error("cannot write " + path);
    }
}

// (k - offset) / denominator: small dyadic rationals, exact in float, so the Rust test rebuilds
// the same parameters bit for bit without relying on libm.
float dyadic(size_t k, int offset, float denominator) {
    return static_cast<float>(static_cast<int>(k) - offset) / denominator;
}

int run(const std::string &scratch_dir) {
    const std::vector<std::string> names = {"O", "B-PER", "I-PER", "B-LOC", "I-LOC"};
    std::vector<float> weights(C * D), transitions(C * C), start(C), features(N * D);
    for (size_t j = 0; j < C; j++) {
        for (size_t k = 0; k < D; k++) {
            weights[j * D + k] = dyadic((j * 5 + k * 7 + 2) % 11, 5, 16.0f);
        }
        for (size_t k = 0; k < C; k++) {
            transitions[j * C + k] = dyadic((j * 7 + k * 3 + 1) % 9, 4, 8.0f);
        }
        start[j] = dyadic(j % 4, 1, 8.0f);
    }
    for (size_t t = 0; t < N; t++) {
        for (size_t k = 0; k < D; k++) {
            features[t * D + k] = dyadic((t * 7 + k * 4 + 3) % 11, 5, 8.0f);
        }
    }
    // O B-PER I-PER I-PER O B-LOC I-LOC
    const std::vector<uint32_t> gold = {0, 1, 2, 2, 0, 3, 4};

    // No bias and no end scores: those blocks are absent from the parameter vector.
    seginf::Crf plain = seginf::Crf::from_arrays(C, D, weights, {}, transitions, start, {});
    std::printf("num_params %zu\n", plain.num_params());
    seginf::Crf crf = plain.with_constraints(SEGINF_TAG_SCHEME_BIO, names);
    std::printf("constrained_num_params %zu\n", crf.num_params());
    print("constrained_params", crf.params());

    auto best = crf.viterbi(features);
    std::printf("viterbi_path");
    for (uint32_t label : best.first) {
        std::printf(" %u", static_cast<unsigned>(label));
    }
    std::printf("\n");
    print("viterbi_score", {best.second});
    print("log_likelihood", {crf.log_likelihood(features, gold)});

    std::vector<double> marginals = crf.marginals(features);
    for (size_t t = 0; t < N; t++) {
        print("marginals_" + std::to_string(t),
              std::vector<double>(marginals.begin() + t * C, marginals.begin() + (t + 1) * C));
    }
    std::vector<double> pairwise = crf.pairwise_marginals(features);
    for (size_t t = 1; t < N; t++) {
        print("pairwise_marginals_" + std::to_string(t),
              std::vector<double>(pairwise.begin() + (t - 1) * C * C,
                                  pairwise.begin() + t * C * C));
    }
    for (size_t a = 0; a < N; a++) {
        for (size_t b = a; b < N; b++) {
            print("segment_loss_" + std::to_string(a) + "_" + std::to_string(b),
                  {crf.segment_loss(features, gold, a, b)});
        }
    }

    // Round trip through safetensors, flair-style: custom names, transitions [to][from].
    std::vector<float> transposed(C * C);
    for (size_t from = 0; from < C; from++) {
        for (size_t to = 0; to < C; to++) {
            transposed[to * C + from] = transitions[from * C + to];
        }
    }
    const std::string model_path = scratch_dir + "/crf_raii_model.safetensors";
    write_safetensors(model_path, {{"crf.start", {C}, start},
                                   {"crf.transitions", {C, C}, transposed},
                                   {"emission.weight", {C, D}, weights}});
    seginf::LoadOptions options;
    options.tensor_name(SEGINF_PARAM_WEIGHT, "emission.weight")
        .tensor_name(SEGINF_PARAM_TRANSITIONS, "crf.transitions")
        .tensor_name(SEGINF_PARAM_START, "crf.start")
        .tensor_name(SEGINF_PARAM_BIAS, "")
        .tensor_name(SEGINF_PARAM_END, "")
        .transitions_to_from(true);
    seginf::Crf loaded = seginf::Crf::load(model_path, options);
    print("loaded_params", loaded.params());
    std::printf("loaded_equals_plain %d\n", loaded.params() == plain.params() ? 1 : 0);

    // Handles move; the moved-from one is empty and calls on it fail cleanly.
    seginf::Crf moved = std::move(crf);
    std::printf("moved_num_labels %zu\n", moved.num_labels());

    // Errors surface as exceptions carrying the status and the library's message.
    int errors_caught = 0;
    auto expect_error = [&](const std::string &key, auto &&call) {
        try {
            call();
            std::printf("%s no error\n", key.c_str());
        } catch (const seginf::Error &e) {
            print_error(key, e);
            errors_caught++;
        }
    };
    expect_error("error_bad_segment", [&] { moved.segment_loss(features, gold, 5, 2); });
    expect_error("error_segment_past_end", [&] { moved.segment_loss(features, gold, 3, N); });
    expect_error("error_label_out_of_range", [&] {
        std::vector<uint32_t> bad = gold;
        bad[4] = C;
        moved.log_likelihood(features, bad);
    });
    expect_error("error_bad_label_name", [&] {
        moved.with_constraints(SEGINF_TAG_SCHEME_BIO, {"O", "B-PER", "I-PER", "B-LOC", "X-LOC"});
    });
    expect_error("error_missing_file",
                 [&] { seginf::Crf::load(scratch_dir + "/no_such_model.safetensors", options); });
    expect_error("error_required_tensor_name",
                 [&] { options.tensor_name(SEGINF_PARAM_WEIGHT, ""); });
    // Deliberate use after move, to show it is an error and not a crash.
    expect_error("error_moved_from", [&] { crf.params(); });
    std::printf("errors_caught %d\n", errors_caught);
    return 0;
}

}  // namespace

int main(int argc, char **argv) {
    try {
        return run(argc > 1 ? argv[1] : ".");
    } catch (const std::exception &e) {
        std::fprintf(stderr, "crf_raii: %s\n", e.what());
        return 1;
    }
}
