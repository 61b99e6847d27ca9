/* Shared by the fused CPU kernels (fused_cpu.c, fused_conv.c): the exp polynomial of their ELU.
 *
 * exp(x) for x <= 0 is 2^n * p(r), n = round(x / ln 2), r = x - n ln 2 (ln 2 split in two for an
 * exact product), p a degree-6 polynomial (Cephes' expf): within 2 ulp of the correctly rounded
 * value on [-87, 0]; below -87 x is clamped (exp ~1.6e-38, so elu = -1 to float precision). */
#ifndef MIMI_FUSED_CPU_H
#define MIMI_FUSED_CPU_H

#define MIMI_EXP_MIN (-87.0f)
#define MIMI_LOG2E 1.44269504088896341f
#define MIMI_SHIFTER 12582912.0f /* 1.5 * 2^23: (v + shifter) - shifter rounds v to an integer */
#define MIMI_LN2_HI 0.693359375f
#define MIMI_LN2_LO (-2.12194440e-4f)
#define MIMI_P0 1.9875691500e-4f
#define MIMI_P1 1.3981999507e-3f
#define MIMI_P2 8.3334519073e-3f
#define MIMI_P3 4.1665795894e-2f
#define MIMI_P4 1.6666665459e-1f
#define MIMI_P5 5.0000001201e-1f

#endif
