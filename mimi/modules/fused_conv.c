/* A causal conv on time-major rows with its bias, skip add and ELU fused (see fused_cpu.py).
 *
 *     v[t] = bias + add[t] + sum_{j < k} x[t + base + j d] @ W_j     x rows [.., c_in], W_j [c_in, c_out]
 *     sum_out[t] = v[t]  (optional)        out[t] = elu ? elu(v[t]) : v[t]
 *
 * x row r (0 <= r < x_rows) is at x + r ldx; rows -ctx_rows <= r < 0 are the carried context of
 * a stream, at ctx + (r + ctx_rows) ld_ctx; rows outside both are zeros (causal padding). A
 * strided conv with kernel 2s is the same sum over blocks of s samples (the caller passes rows
 * of s * c_in values and k = 2 block taps). bias, add, sum_out: optional (NULL); add, sum_out
 * and out are contiguous [n_out, c_out].
 *
 * Why. The high-rate SEANet layers (32-128 channels at 6-24 kHz) are GEMMs too thin for BLAS to
 * run at full speed, and each of their outputs went through memory once more for the bias, the
 * skip add and the ELU. Here a register tile of R output rows x NB vectors of channels sums all
 * taps and input channels (each weight vector loaded once per tile, each input value broadcast
 * once per tile), then the epilogue runs on the tile while it is still in registers.
 *
 * The vectors are GCC/Clang vector extensions: 16 floats where the compiler targets AVX-512,
 * 8 otherwise (lowered to whatever the host has). The sums run in another order than BLAS's:
 * results agree to float rounding.
 */
#include <stdint.h>
#include <string.h>

#include "fused_cpu.h"

#if defined(__GNUC__) && !defined(__clang__)
/* acc += x * w as one FMA (ISO C mode leaves products and sums apart; Clang contracts them) */
#pragma GCC optimize("fp-contract=fast")
#endif

#if defined(__AVX512F__)
#define VW 16  /* floats per vector */
#define ACC 24 /* accumulator vectors per tile (of 32 registers) */
#define SPLAT(v) ((vf){v, v, v, v, v, v, v, v, v, v, v, v, v, v, v, v})
#else
#define VW 8
#define ACC 12 /* (of 16 registers) */
#define SPLAT(v) ((vf){v, v, v, v, v, v, v, v})
#endif
#define TASK_TILES 8 /* tiles per OpenMP task */

typedef float vf __attribute__((vector_size(VW * 4), aligned(4)));
typedef int32_t vi __attribute__((vector_size(VW * 4), aligned(4)));

static inline vf load(const float *p) {
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void store(float *p, vf v) { memcpy(p, &v, sizeof v); }

static inline vf splat(float v) { return SPLAT(v); }

static inline vf vselect(vi mask, vf a, vf b) { return (vf)(((vi)a & mask) | ((vi)b & ~mask)); }

/* elu(v) = v > 0 ? v : exp(v) - 1 (exp of fused_cpu.h); NaN passes through */
static inline vf velu(vf v) {
    vf x = vselect(v < splat(0.0f), v, splat(0.0f));
    x = vselect(x < splat(MIMI_EXP_MIN), splat(MIMI_EXP_MIN), x);
    vf n = (x * splat(MIMI_LOG2E) + splat(MIMI_SHIFTER)) - splat(MIMI_SHIFTER);
    vf r = x - n * splat(MIMI_LN2_HI);
    r = r - n * splat(MIMI_LN2_LO);
    vf p = splat(MIMI_P0);
    p = p * r + splat(MIMI_P1);
    p = p * r + splat(MIMI_P2);
    p = p * r + splat(MIMI_P3);
    p = p * r + splat(MIMI_P4);
    p = p * r + splat(MIMI_P5);
    p = p * r * r + r + splat(1.0f);
    vi bits = (__builtin_convertvector(n, vi) + 127) << 23; /* 2^n, n in [-126, 0] */
    vf e = p * (vf)bits - splat(1.0f);
    return vselect(v <= splat(0.0f), e, v);
}

typedef struct {
    const float *x, *ctx, *w, *bias, *add;
    float *sum_out, *out;
    int64_t x_rows, ldx, ctx_rows, ld_ctx, c_in, k, d, base, c_out;
    int elu;
} conv_args;

/* The epilogue of one vector of outputs: row t, channels o..o+VW. */
static inline void finish(const conv_args *a, int64_t t, int64_t o, vf v) {
    if (a->bias) v += load(a->bias + o);
    if (a->add) v += load(a->add + t * a->c_out + o);
    if (a->sum_out) store(a->sum_out + t * a->c_out + o, v);
    if (a->elu) v = velu(v);
    store(a->out + t * a->c_out + o, v);
}

/* R rows from t0 (all their taps inside x) x NB vectors of channels from o0. */
#define MIMI_TILE(NB)                                                                              \
    static void tile_##NB(const conv_args *a, int64_t t0, int64_t o0) {                            \
        enum { R = ACC / NB };                                                                     \
        vf acc[R][NB];                                                                             \
        for (int r = 0; r < R; r++)                                                                \
            for (int b = 0; b < NB; b++) acc[r][b] = splat(0.0f);                                  \
        for (int64_t j = 0; j < a->k; j++) {                                                       \
            const float *xs = a->x + (t0 + a->base + j * a->d) * a->ldx; /* row of output t0 */    \
            const float *wj = a->w + j * a->c_in * a->c_out + o0;                                  \
            for (int64_t c = 0; c < a->c_in; c++) {                                                \
                vf wv[NB];                                                                         \
                for (int b = 0; b < NB; b++) wv[b] = load(wj + c * a->c_out + b * VW);             \
                for (int r = 0; r < R; r++) {                                                      \
                    vf xb = splat(xs[r * a->ldx + c]);                                             \
                    for (int b = 0; b < NB; b++) acc[r][b] += xb * wv[b];                          \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
        for (int r = 0; r < R; r++)                                                                \
            for (int b = 0; b < NB; b++) finish(a, t0 + r, o0 + b * VW, acc[r][b]);                \
    }
MIMI_TILE(1)
MIMI_TILE(2)
MIMI_TILE(4)

/* One output row, any taps: those in the context read it, those outside x and it are zeros. */
static void edge_row(const conv_args *a, int64_t t) {
    for (int64_t o = 0; o < a->c_out; o += VW) {
        vf acc = splat(0.0f);
        for (int64_t j = 0; j < a->k; j++) {
            int64_t src = t + a->base + j * a->d;
            const float *xs;
            if (src >= 0 && src < a->x_rows)
                xs = a->x + src * a->ldx;
            else if (src < 0 && src >= -a->ctx_rows && a->ctx)
                xs = a->ctx + (src + a->ctx_rows) * a->ld_ctx;
            else
                continue;
            const float *wj = a->w + j * a->c_in * a->c_out + o;
            for (int64_t c = 0; c < a->c_in; c++) acc += splat(xs[c]) * load(wj + c * a->c_out);
        }
        finish(a, t, o, acc);
    }
}

int mimi_conv_vector_width(void) { return VW; }

/* Returns 0, or -1 when c_out is not a multiple of the vector width (nothing written). */
int mimi_conv_rows(const float *x, int64_t x_rows, int64_t ldx, const float *ctx, int64_t ctx_rows,
                   int64_t ld_ctx, int64_t c_in, const float *w, int64_t k, int64_t d, int64_t base,
                   int64_t c_out, const float *bias, const float *add, float *sum_out, float *out,
                   int64_t n_out, int elu, int threads) {
    if (c_out <= 0 || c_out % VW) return -1;
    conv_args a = {x, ctx, w, bias, add, sum_out, out, x_rows, ldx, ctx_rows, ld_ctx, c_in, k, d, base,
                   c_out, elu};
    int nb = c_out % (4 * VW) == 0 ? 4 : c_out % (2 * VW) == 0 ? 2 : 1;
    int64_t R = ACC / nb;
    /* outputs lo <= t < hi read only rows of x: t + base >= 0, t + base + (k - 1) d < x_rows */
    int64_t lo = base < 0 ? -base : 0;
    int64_t hi = x_rows - base - (k - 1) * d;
    lo = lo < n_out ? lo : n_out;
    hi = hi < n_out ? hi : n_out;
    hi = hi > lo ? hi : lo;
    int64_t tiles = (hi - lo) / R;
    int64_t tasks = (tiles + TASK_TILES - 1) / TASK_TILES;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && tasks > 1)
    for (int64_t q = 0; q < tasks; q++) {
        int64_t end = (q + 1) * TASK_TILES < tiles ? (q + 1) * TASK_TILES : tiles;
        for (int64_t i = q * TASK_TILES; i < end; i++)
            for (int64_t o = 0; o < c_out; o += nb * VW) {
                if (nb == 4)
                    tile_4(&a, lo + i * R, o);
                else if (nb == 2)
                    tile_2(&a, lo + i * R, o);
                else
                    tile_1(&a, lo + i * R, o);
            }
    }
    for (int64_t t = 0; t < lo; t++) edge_row(&a, t);
    for (int64_t t = lo + tiles * R; t < n_out; t++) edge_row(&a, t);
    return 0;
}
