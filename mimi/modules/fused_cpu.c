/* Fused elementwise kernels for SEANet inference on CPU (see fused_cpu.py).
 *
 * One kernel, one pass over [rows, C] float32 data:
 *
 *     v = a (+ b) (+ bias[c])          b: an optional second term, bias: optional, per channel
 *     sum_out = v                       (optional)
 *     elu_out = elu(v)                  (optional; ELU with alpha 1: v > 0 ? v : exp(v) - 1)
 *
 * Outputs may alias a or b (in-place use). Built with -O3 and the host's instruction set; the
 * loops are written so that GCC/Clang vectorise them (no calls, no branches in the inner loop).
 * exp is the polynomial of fused_cpu.h (within 2 ulp on [-87, 0]): exp(v) - 1 then differs
 * from the exact expm1 by at most ~6e-8 in absolute value, as torch's own `exp(x) - 1` does.
 */
#include <stdint.h>
#include <string.h>

#include "fused_cpu.h"

#define MIMI_FLAT_ROW 256       /* values per row when there is no bias (flat data) */
#define MIMI_TASK_VALUES 16384  /* values per OpenMP task */

static inline float exp_nonpositive(float x) {
    /* exp(x) for x <= 0 (fused_cpu.h) */
    x = x < MIMI_EXP_MIN ? MIMI_EXP_MIN : x;
    float n = (x * MIMI_LOG2E + MIMI_SHIFTER) - MIMI_SHIFTER;
    float r = x - n * MIMI_LN2_HI;
    r = r - n * MIMI_LN2_LO;
    float p = MIMI_P0;
    p = p * r + MIMI_P1;
    p = p * r + MIMI_P2;
    p = p * r + MIMI_P3;
    p = p * r + MIMI_P4;
    p = p * r + MIMI_P5;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23; /* 2^n, n in [-126, 0] */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* One row of c values; the flags are compile-time constants at every call site, so each
 * combination compiles to its own branch-free, vectorised loop. */
static inline __attribute__((always_inline)) void row(const float *a, const float *b,
                                                      const float *bias, int64_t c,
                                                      float *sum_out, float *elu_out, int has_b,
                                                      int has_bias, int has_sum, int has_elu) {
    for (int64_t i = 0; i < c; i++) {
        float x = a[i];
        if (has_b) x += b[i];
        if (has_bias) x += bias[i];
        if (has_sum) sum_out[i] = x;
        if (has_elu) {
            float e = exp_nonpositive(x < 0.0f ? x : 0.0f) - 1.0f;
            elu_out[i] = x <= 0.0f ? e : x; /* NaN passes through, as in torch's ELU */
        }
    }
}

#define MIMI_ROWS(HB, HBIAS, HS, HE)                                                              \
    for (int64_t r = r0; r < r1; r++)                                                             \
        row(a + r * c, HB ? b + r * c : 0, bias, c, HS ? sum_out + r * c : 0,                     \
            HE ? elu_out + r * c : 0, HB, HBIAS, HS, HE)

static void rows(const float *a, const float *b, const float *bias, int64_t c, int64_t r0, int64_t r1,
                 float *sum_out, float *elu_out) {
    int key = (b != 0) << 3 | (bias != 0) << 2 | (sum_out != 0) << 1 | (elu_out != 0);
    switch (key) {
    case 0x1: MIMI_ROWS(0, 0, 0, 1); break;
    case 0x2: MIMI_ROWS(0, 0, 1, 0); break;
    case 0x3: MIMI_ROWS(0, 0, 1, 1); break;
    case 0x5: MIMI_ROWS(0, 1, 0, 1); break;
    case 0x6: MIMI_ROWS(0, 1, 1, 0); break;
    case 0x7: MIMI_ROWS(0, 1, 1, 1); break;
    case 0x9: MIMI_ROWS(1, 0, 0, 1); break;
    case 0xa: MIMI_ROWS(1, 0, 1, 0); break;
    case 0xb: MIMI_ROWS(1, 0, 1, 1); break;
    case 0xd: MIMI_ROWS(1, 1, 0, 1); break;
    case 0xe: MIMI_ROWS(1, 1, 1, 0); break;
    case 0xf: MIMI_ROWS(1, 1, 1, 1); break;
    default: break; /* no output requested */
    }
}

/* a, b, sum_out, elu_out: [n_rows, c] contiguous; bias: [c]; b, bias, sum_out, elu_out may be
 * NULL. threads: OpenMP threads to use (1: run on the calling thread). */
void mimi_fused_add_elu(const float *a, const float *b, const float *bias, int64_t n_rows, int64_t c,
                        float *sum_out, float *elu_out, int threads) {
    /* Without a bias the data is one flat run of values: cut it into long rows (longer loops). */
    int64_t n = n_rows * c;
    if (!bias && n % MIMI_FLAT_ROW == 0) {
        n_rows = n / MIMI_FLAT_ROW;
        c = MIMI_FLAT_ROW;
    }
    if (threads <= 1) {
        rows(a, b, bias, c, 0, n_rows, sum_out, elu_out);
        return;
    }
    int64_t per_task = (MIMI_TASK_VALUES + c - 1) / c; /* rows per OpenMP task */
    int64_t tasks = (n_rows + per_task - 1) / per_task;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t k = 0; k < tasks; k++) {
        int64_t r0 = k * per_task;
        int64_t r1 = r0 + per_task < n_rows ? r0 + per_task : n_rows;
        rows(a, b, bias, c, r0, r1, sum_out, elu_out);
    }
}
