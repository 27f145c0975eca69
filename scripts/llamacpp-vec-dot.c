// llama.cpp's own row kernels (`vec_dot` of its CPU backend) over a
// quantized matrix, one thread, for side-by-side figures with whale's
// `cargo run --release -p whale-kernels --example decode_bw 1 MB COLS TYPES`:
// the same matrix size, the same columns, weight bytes read per second.
// With a small MB (1) the matrix stays in L2 and the figure is the kernel's
// compute rate, which is what bounds decode wherever memory is fast.
// Outside whale's build: compile it against a llama.cpp build, e.g.
//
//   LC=/path/to/llama.cpp; B=$LC/build/bin
//   FLAGS="-I$LC/ggml/include -L$B -lggml-cpu -lggml-base -Wl,-rpath,$B"
//   gcc -O2 scripts/llamacpp-vec-dot.c $FLAGS -o /tmp/vec-dot
//   /tmp/vec-dot 1 7168 q4_K,q6_K,q8_0,iq1_s
//
// Type names are ggml's (`ggml_type_name`, case-insensitive); `q4_K/8x8`
// (also q4_0, iq4_nl, q2_K) times the repacked kernel llama.cpp runs instead. Weights are
// random values quantized by `ggml_quantize_chunk` (an all-ones importance
// matrix for the types that need one), activations a random row converted
// by the type's `from_float`; the best of the passes is printed, with
// nanoseconds per weight block and a checksum of the results.

#include "ggml.h"
#include "ggml-cpu.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int type_by_name(const char * name) {
    for (int t = 0; t < GGML_TYPE_COUNT; t++) {
        const char * n = ggml_type_name((enum ggml_type) t);
        if (n && strcasecmp(n, name) == 0) {
            return t;
        }
    }
    return -1;
}

// xorshift64: the same weights on every run.
static unsigned long long rng_state = 0x9E3779B97F4A7C15ull;
static float uniform(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float) (rng_state >> 40) / (float) (1 << 24) * 2.0f - 1.0f;
}

static void bench(enum ggml_type ty, double mb, int cols) {
    const int blck = (int) ggml_blck_size(ty);
    if (cols % blck != 0) {
        fprintf(stderr, "%s: %d columns are not a multiple of its %d-element block\n", ggml_type_name(ty), cols, blck);
        return;
    }
    const size_t rb = ggml_row_size(ty, cols);
    int rows = (int) (mb * 1e6 / rb);
    if (rows < 1) {
        rows = 1;
    }
    enum { CHUNK = 64 };
    float * src = malloc(sizeof(float) * (size_t) cols * CHUNK);
    float * imatrix = malloc(sizeof(float) * (size_t) cols);
    char * w = aligned_alloc(64, (rb * rows + 63) / 64 * 64);
    for (int i = 0; i < cols; i++) {
        imatrix[i] = 1.0f;
    }
    for (int r = 0; r < rows; r += CHUNK) {
        const int n = rows - r < CHUNK ? rows - r : CHUNK;
        for (size_t i = 0; i < (size_t) cols * n; i++) {
            src[i] = uniform();
        }
        ggml_quantize_chunk(ty, src, w + rb * r, 0, n, cols, imatrix);
    }
    const struct ggml_type_traits_cpu * tr = ggml_get_type_traits_cpu(ty);
    const enum ggml_type aty = tr->vec_dot_type;
    const size_t ab = ggml_row_size(aty, cols);
    char * act = aligned_alloc(64, (ab + 63) / 64 * 64);
    for (int i = 0; i < cols; i++) {
        src[i] = uniform();
    }
    ggml_get_type_traits_cpu(aty)->from_float(src, act, cols);

    float * out = malloc(sizeof(float) * rows);
    const int passes = mb < 8 ? 200 : 5;
    double best = 1e30;
    for (int p = 0; p < passes; p++) {
        const double t0 = now();
        for (int r = 0; r < rows; r++) {
            tr->vec_dot(cols, out + r, 0, w + rb * r, 0, act, 0, 1);
        }
        const double t = now() - t0;
        best = t < best ? t : best;
    }
    double check = 0;
    for (int r = 0; r < rows; r++) {
        check += out[r];
    }
    printf("%-8s %6d cols %6d rows  %6.1f GB/s  %6.2f ns/block  (checksum %g)\n", ggml_type_name(ty), cols, rows,
           rb * rows / best / 1e9, best * 1e9 / rows / (cols / blck), check);
    free(out);
    free(act);
    free(w);
    free(imatrix);
    free(src);
}

// llama.cpp's repacked decode kernels: on x86 its CPU backend stores Q4_0,
// IQ4_NL and Q4_K (AVX2) and Q2_K (AVX-512) eight rows interleaved and runs
// `ggml_gemv_*_8x8` on them instead of `vec_dot`. The repacking itself is
// not exported, so the eight blocks of a group are laid out field by field
// (their `d`, then `dmin`, then the rest), which is the repacked block's
// size and the same kind of values, not its exact byte order: the timing
// is the kernel's, the checksum means nothing here.
typedef void (*gemv_fn)(int, float *, size_t, const void *, const void *, int, int);
void ggml_gemv_q4_0_8x8_q8_0(int, float *, size_t, const void *, const void *, int, int);
void ggml_gemv_iq4_nl_8x8_q8_0(int, float *, size_t, const void *, const void *, int, int);
void ggml_gemv_q4_K_8x8_q8_K(int, float *, size_t, const void *, const void *, int, int);
void ggml_gemv_q2_K_8x8_q8_K(int, float *, size_t, const void *, const void *, int, int);

static void bench_repacked(enum ggml_type ty, double mb, int cols) {
    gemv_fn gemv;
    size_t halves;  // f16 fields at the block's start (d, and dmin for the K-quants)
    size_t head;    // offset of those fields in the file's block
    switch (ty) {
        case GGML_TYPE_Q4_0: gemv = ggml_gemv_q4_0_8x8_q8_0; halves = 1; head = 0; break;
        case GGML_TYPE_IQ4_NL: gemv = ggml_gemv_iq4_nl_8x8_q8_0; halves = 1; head = 0; break;
        case GGML_TYPE_Q4_K: gemv = ggml_gemv_q4_K_8x8_q8_K; halves = 2; head = 0; break;
        case GGML_TYPE_Q2_K: gemv = ggml_gemv_q2_K_8x8_q8_K; halves = 2; head = 80; break;
        default:
            fprintf(stderr, "%s has no repacked decode kernel on x86\n", ggml_type_name(ty));
            return;
    }
    const int blck = (int) ggml_blck_size(ty);
    if (cols % blck != 0) {
        fprintf(stderr, "%s: %d columns are not a multiple of its %d-element block\n", ggml_type_name(ty), cols, blck);
        return;
    }
    const size_t bb = ggml_type_size(ty);
    const size_t rb = ggml_row_size(ty, cols);
    const int nb = cols / blck;
    int rows = (int) (mb * 1e6 / rb) / 8 * 8;
    if (rows < 8) {
        rows = 8;
    }
    float * src = malloc(sizeof(float) * (size_t) cols * 8);
    float * imatrix = malloc(sizeof(float) * (size_t) cols);
    char * file = malloc(rb * 8);
    char * w = aligned_alloc(64, (rb * rows + 63) / 64 * 64);
    for (int i = 0; i < cols; i++) {
        imatrix[i] = 1.0f;
    }
    for (int g = 0; g < rows / 8; g++) {
        for (size_t i = 0; i < (size_t) cols * 8; i++) {
            src[i] = uniform();
        }
        ggml_quantize_chunk(ty, src, file, 0, 8, cols, imatrix);
        for (int b = 0; b < nb; b++) {
            char * out = w + rb * 8 * g + bb * 8 * b;
            for (size_t h = 0; h < halves; h++) {
                for (int r = 0; r < 8; r++) {
                    memcpy(out, file + rb * r + bb * b + head + 2 * h, 2);
                    out += 2;
                }
            }
            for (int r = 0; r < 8; r++) {
                const char * blk = file + rb * r + bb * b;
                if (head == 0) {
                    memcpy(out, blk + 2 * halves, bb - 2 * halves);
                } else {
                    memcpy(out, blk, head);
                }
                out += bb - 2 * halves;
            }
        }
    }
    const enum ggml_type aty = ggml_get_type_traits_cpu(ty)->vec_dot_type;
    char * act = aligned_alloc(64, (ggml_row_size(aty, cols) + 63) / 64 * 64);
    for (int i = 0; i < cols; i++) {
        src[i] = uniform();
    }
    ggml_get_type_traits_cpu(aty)->from_float(src, act, cols);
    float * res = malloc(sizeof(float) * rows);
    const int passes = mb < 8 ? 200 : 5;
    double best = 1e30;
    for (int p = 0; p < passes; p++) {
        const double t0 = now();
        gemv(cols, res, rows, w, act, 1, rows);
        const double t = now() - t0;
        best = t < best ? t : best;
    }
    printf("%-8s %6d cols %6d rows  %6.1f GB/s  %6.2f ns/block  (repacked 8x8 gemv)\n", ggml_type_name(ty), cols, rows,
           rb * rows / best / 1e9, best * 1e9 / rows / nb);
    free(res);
    free(act);
    free(w);
    free(file);
    free(imatrix);
    free(src);
}

int main(int argc, char ** argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s MB COLS TYPE[,TYPE...]\n", argv[0]);
        return 2;
    }
    const double mb = atof(argv[1]);
    const int cols = atoi(argv[2]);
    if (mb <= 0 || cols <= 0) {
        fprintf(stderr, "MB and COLS must be positive\n");
        return 2;
    }
    ggml_cpu_init();
    char * list = strdup(argv[3]);
    for (char * name = strtok(list, ","); name; name = strtok(NULL, ",")) {
        char * slash = strchr(name, '/');
        if (slash) {
            *slash = 0;
        }
        const int t = type_by_name(name);
        if (t < 0) {
            fprintf(stderr, "unknown type %s\n", name);
            continue;
        }
        if (slash && strcmp(slash + 1, "8x8") == 0) {
            bench_repacked((enum ggml_type) t, mb, cols);
        } else {
            bench((enum ggml_type) t, mb, cols);
        }
    }
    free(list);
    return 0;
}
