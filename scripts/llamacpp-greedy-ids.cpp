// Greedy token ids from llama.cpp, for recording reference outputs in
// whale's tests (crates/whale/tests/llamacpp_greedy.rs). Outside whale's
// build: compile it against a llama.cpp build, e.g.
//
//   LC=/work/llamacpp/llama_cpp_python-0.3.36/vendor/llama.cpp
//   g++ -O2 -std=c++17 scripts/llamacpp-greedy-ids.cpp -I$LC/include -I$LC/ggml/include \
//       -L$LC/build/bin -lllama -lggml -lggml-base -Wl,-rpath,$LC/build/bin -o /tmp/greedy-ids
//   /tmp/greedy-ids MODEL.gguf 671,6102,294,8760,344 32 [threads]
//
// The prompt ids are decoded in one batch, then each chosen token alone (as
// `whale run` does); prints the generated ids, comma-separated.
// GREEDY_IDS_TOP=1 prints each step's two best logits to stderr, and
// GREEDY_IDS_EXPERTS=1 the experts each MoE layer chose for each token it
// computed (sorted; llama.cpp's last layer computes only the last token),
// to find where a MoE model's routing parts from whale's (`=scores` adds
// the router's scores of each step's last token; GREEDY_IDS_BATCH=1 runs
// the ids given as the prompt in one batch instead, every row to the end,
// so that its experts can be set beside the one-at-a-time run's): a near-tie in
// the router (whale: the 8th against the 9th expert's score) flips with
// either engine's rounding.

#include "ggml-backend.h"
#include "ggml.h"
#include "llama.h"

#include <algorithm>
#include <cstring>

#include <cstdio>
#include <cstdlib>
#include <utility>
#include <string>
#include <vector>

static bool decode(llama_context * ctx, llama_batch_ext * batch, const std::vector<llama_token> & ids, llama_pos pos0,
                   bool all = false) {
    llama_batch_ext_clear(batch);
    for (size_t i = 0; i < ids.size(); i++) {
        const int32_t idx = llama_batch_ext_add_token(batch, 0, ids[i]);
        const llama_pos pos = pos0 + (llama_pos) i;
        llama_batch_ext_set_pos(batch, idx, &pos);
    }
    for (size_t i = all ? 0 : ids.size() - 1; i < ids.size(); i++) {
        llama_batch_ext_set_output_logits(batch, (int32_t) i, true);
    }
    return llama_process(ctx, LLAMA_PROCESS_TYPE_DECODE, batch) == 0;
}

// Whether environment variable `name` is set to `value`.
static bool env_is(const char * name, const char * value) {
    const char * v = getenv(name);
    return v && strcmp(v, value) == 0;
}

// The experts of `ffn_moe_topk-LAYER` (`[k, tokens]` i32), to stderr.
static bool print_experts(struct ggml_tensor * t, bool ask, void *) {
    static const bool scores = env_is("GREEDY_IDS_EXPERTS", "scores");
    const bool probs = scores && strncmp(t->name, "ffn_moe_probs-", 14) == 0 && !strchr(t->name, ' ');
    if (strncmp(t->name, "ffn_moe_topk", 12) != 0 && !probs) {
        return false;
    }
    if (ask) {
        return true;
    }
    if (probs) {
        // The router's scores (`[n_expert, tokens]` f32, after the gating
        // function, before the selection bias) of the last token.
        const int ne = (int) t->ne[0], n = (int) t->ne[1];
        std::vector<float> p((size_t) ne * n);
        ggml_backend_tensor_get(t, p.data(), 0, p.size() * sizeof(float));
        fprintf(stderr, "%s scores:", t->name);
        for (int e = 0; e < ne; e++) {
            fprintf(stderr, " %.9g", p[(size_t) (n - 1) * ne + e]);
        }
        fprintf(stderr, "\n");
        return true;
    }
    // A view of the argsort's first k of each row: rows are nb[1] apart.
    const int k = (int) t->ne[0], n = (int) t->ne[1];
    const size_t row = t->nb[1] / sizeof(int32_t);
    std::vector<int32_t> ids(row * (n - 1) + k);
    ggml_backend_tensor_get(t, ids.data(), 0, ids.size() * sizeof(int32_t));
    for (int j = 0; j < n; j++) {
        std::sort(ids.begin() + j * row, ids.begin() + j * row + k);
        fprintf(stderr, "%s token %d:", t->name, j);
        for (int e = 0; e < k; e++) {
            fprintf(stderr, " %d", ids[j * row + e]);
        }
        fprintf(stderr, "\n");
    }
    return true;
}

int main(int argc, char ** argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL.gguf ID,ID,... N [THREADS]\n", argv[0]);
        return 2;
    }
    std::vector<llama_token> prompt;
    for (std::string s = argv[2]; !s.empty();) {
        size_t c = s.find(',');
        prompt.push_back(std::atoi(s.substr(0, c).c_str()));
        s = c == std::string::npos ? "" : s.substr(c + 1);
    }
    int n = std::atoi(argv[3]);
    const int threads = argc > 4 ? std::atoi(argv[4]) : 2;

    llama_backend_init();
    llama_model * model = llama_model_load_from_file(argv[1], llama_model_default_params());
    if (!model) {
        fprintf(stderr, "cannot load %s\n", argv[1]);
        return 1;
    }
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = prompt.size() + n + 8;
    cp.n_batch = cp.n_ctx;
    cp.n_threads = cp.n_threads_batch = threads;
    if (env_is("GREEDY_IDS_CACHE", "f32")) {
        // As `-ctk f32 -ctv f32 -fa off` (whale run --cache-type f32).
        cp.type_k = cp.type_v = GGML_TYPE_F32;
        cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    }
    if (getenv("GREEDY_IDS_EXPERTS")) {
        cp.cb_eval = print_experts;
        cp.cb_eval_user_data = nullptr;
    }
    llama_context * ctx = llama_init_from_model(model, cp);
    llama_sampler * smpl = llama_sampler_chain_init(llama_sampler_chain_default_params());
    llama_sampler_chain_add(smpl, llama_sampler_init_greedy());
    llama_batch_ext * batch = llama_batch_ext_init(ctx);

    if (getenv("GREEDY_IDS_BATCH")) {
        // The ids in one batch, every row computed to the end (with
        // GREEDY_IDS_EXPERTS: each token's experts, as the one-at-a-time
        // run computes them one by one).
        if (!decode(ctx, batch, prompt, 0, true)) {
            fprintf(stderr, "decode failed\n");
            return 1;
        }
        n = 0;
    }
    std::vector<llama_token> step = prompt;
    llama_pos pos = 0;
    for (int i = 0; i < n; i++) {
        if (!decode(ctx, batch, step, pos)) {
            fprintf(stderr, "decode failed\n");
            return 1;
        }
        pos += (llama_pos) step.size();
        const llama_token id = llama_sampler_sample(smpl, ctx, -1);
        printf(i ? ",%d" : "%d", id);
        if (getenv("GREEDY_IDS_TOP")) {
            // The two best logits of this step, to stderr.
            const float * l = llama_get_logits_ith(ctx, -1);
            const int nv = llama_vocab_n_tokens(llama_model_get_vocab(model));
            int a = 0, b = 1;
            if (l[b] > l[a]) std::swap(a, b);
            for (int t = 2; t < nv; t++) {
                if (l[t] > l[a]) { b = a; a = t; } else if (l[t] > l[b]) { b = t; }
            }
            fprintf(stderr, "step %d: %d %.5f %d %.5f\n", i, a, l[a], b, l[b]);
        }
        step = {id};
    }
    printf("\n");
    llama_batch_ext_free(batch);
    llama_sampler_free(smpl);
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
