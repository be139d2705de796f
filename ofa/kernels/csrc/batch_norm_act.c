/* Training-mode batch normalisation fused with the activation that follows it, on
   channels-last float32 tensors viewed as M = N*H*W rows of C channels.

   forward:  y = act((x - mean) * invstd * w + b), batch mean and biased variance per channel;
             the running statistics (when given) move by `momentum` (unbiased variance).
   backward: with z = xhat * w + b and dz = dy * act'(z),
             db = sum dz, dw = sum dz * xhat, dx = w * invstd * (dz - db / M - xhat * dw / M).
   act: 0 none, 1 relu, 2 hardswish (x * relu6(x + 3) / 6).

   torch runs batch norm and the activation as separate kernels, forward and backward, each a
   pass over the tensor and an allocation; for the small tensors of a supernet step on a CPU
   those passes cost more than the arithmetic. Here the backward recomputes z from x instead
   of reading a saved activation. Sums over rows are per thread over fixed row ranges (float
   within blocks of rows, double across blocks), added in thread order: deterministic for a
   thread count. Built and loaded by ofa/kernels/compiled.py. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>

#define BLOCK 128

static inline float act_fwd(float z, int act) {
  if (act == 1) return z > 0.f ? z : 0.f;
  if (act == 2) return z <= -3.f ? 0.f : (z >= 3.f ? z : z * (z + 3.f) / 6.f);
  return z;
}

static inline float act_grad(float z, int act) { /* torch's threshold/hardswish backward */
  if (act == 1) return z > 0.f ? 1.f : 0.f;
  if (act == 2) return z < -3.f ? 0.f : (z <= 3.f ? z / 3.f + 0.5f : 1.f);
  return 1.f;
}

static void add_in_order(double* partial, int T, int C, double* total) {
  for (int c = 0; c < C; c++) total[c] = 0.0;
  for (int t = 0; t < T; t++)
    for (int c = 0; c < C; c++) total[c] += partial[(size_t)t * C + c];
}

/* out1[c], out2[c] = sums over the rows [r0, r1) of the pair (s1, s2) that BODY sets for row r
   and channel c: float within blocks of BLOCK rows, double across blocks. */
#define PAIR_SUMS(out1, out2, r0, r1, C, BODY)                              \
  do {                                                                      \
    float* blk = calloc((size_t)2 * (C), sizeof(float));                    \
    for (int c = 0; c < (C); c++) (out1)[c] = (out2)[c] = 0.0;              \
    for (long bb = (r0); bb < (r1); bb += BLOCK) {                          \
      long e = bb + BLOCK < (r1) ? bb + BLOCK : (r1);                       \
      memset(blk, 0, sizeof(float) * 2 * (size_t)(C));                     \
      for (long r = bb; r < e; r++) {                                       \
        _Pragma("omp simd") for (int c = 0; c < (C); c++) {                 \
          float s1, s2;                                                     \
          BODY;                                                             \
          blk[c] += s1;                                                     \
          blk[(C) + c] += s2;                                               \
        }                                                                   \
      }                                                                     \
      for (int c = 0; c < (C); c++) {                                       \
        (out1)[c] += blk[c];                                                \
        (out2)[c] += blk[(C) + c];                                          \
      }                                                                     \
    }                                                                       \
    free(blk);                                                              \
  } while (0)

int batch_norm_act_forward(const float* restrict x, const float* restrict w, const float* restrict b,
                           float* restrict y, float* restrict mean_out, float* restrict invstd_out,
                           float* running_mean, float* running_var, long M, int C, float momentum,
                           float eps, int act, int threads) {
  if (M < 1 || C < 1 || threads < 1) return 1;
  double* partial = calloc((size_t)2 * threads * C, sizeof(double));
  double* total = calloc((size_t)2 * C, sizeof(double));
  double* total2 = total + C;
  float* mean = mean_out;
  if (!partial || !total) { free(partial); free(total); return 1; }
#pragma omp parallel num_threads(threads)
  {
    int t = omp_get_thread_num(), T = omp_get_num_threads();
    long r0 = M * t / T, r1 = M * (t + 1) / T;
    /* sums of x - shift and of its square in one pass; the shift (the first row) keeps
       E[(x-s)^2] - E[x-s]^2 from cancelling when the mean is large against the spread */
    PAIR_SUMS(partial + (size_t)t * C, partial + (size_t)(T + t) * C, r0, r1, C,
              s1 = x[r * C + c] - x[c]; s2 = s1 * s1);
#pragma omp barrier
#pragma omp single
    {
      add_in_order(partial, T, C, total);
      add_in_order(partial + (size_t)T * C, T, C, total2);
      for (int c = 0; c < C; c++) {
        double shifted_mean = total[c] / (double)M;
        double var = total2[c] / (double)M - shifted_mean * shifted_mean;
        if (var < 0.0) var = 0.0;
        mean[c] = (float)((double)x[c] + shifted_mean);
        invstd_out[c] = (float)(1.0 / sqrt(var + (double)eps));
        if (running_mean) running_mean[c] = (1.f - momentum) * running_mean[c] + momentum * mean[c];
        if (running_var) {
          double unbiased = M > 1 ? var * (double)M / (double)(M - 1) : var;
          running_var[c] = (1.f - momentum) * running_var[c] + momentum * (float)unbiased;
        }
      }
    }
    for (long r = r0; r < r1; r++) {
      const float* xr = x + r * C;
      float* yr = y + r * C;
#pragma omp simd
      for (int c = 0; c < C; c++) yr[c] = act_fwd((xr[c] - mean[c]) * invstd_out[c] * w[c] + b[c], act);
    }
  }
  free(partial);
  free(total);
  return 0;
}

int batch_norm_act_backward(const float* restrict dy, const float* restrict x, const float* restrict mean,
                            const float* restrict invstd, const float* restrict w, const float* restrict b,
                            float* restrict dx, float* restrict dw, float* restrict db, long M, int C,
                            int act, int threads) {
  if (M < 1 || C < 1 || threads < 1) return 1;
  double* partial = calloc((size_t)2 * threads * C, sizeof(double));
  double* total = calloc((size_t)C, sizeof(double));
  float* scale = calloc((size_t)3 * C, sizeof(float));
  if (!partial || !total || !scale) { free(partial); free(total); free(scale); return 1; }
  float *k_dz = scale + C, *k_xhat = scale + 2 * C;
#pragma omp parallel num_threads(threads)
  {
    int t = omp_get_thread_num(), T = omp_get_num_threads();
    long r0 = M * t / T, r1 = M * (t + 1) / T;
#define XHAT ((x[r * C + c] - mean[c]) * invstd[c])
#define DZ (dy[r * C + c] * act_grad(XHAT * w[c] + b[c], act))
    PAIR_SUMS(partial + (size_t)t * C, partial + (size_t)(T + t) * C, r0, r1, C, s1 = DZ; s2 = s1 * XHAT);
#pragma omp barrier
#pragma omp single
    {
      add_in_order(partial, T, C, total);
      for (int c = 0; c < C; c++) db[c] = (float)total[c];
      add_in_order(partial + (size_t)T * C, T, C, total);
      for (int c = 0; c < C; c++) {
        dw[c] = (float)total[c];
        scale[c] = w[c] * invstd[c];
        k_dz[c] = db[c] / (float)M;
        k_xhat[c] = dw[c] / (float)M;
      }
    }
    for (long r = r0; r < r1; r++) {
#pragma omp simd
      for (int c = 0; c < C; c++) dx[r * C + c] = scale[c] * (DZ - k_dz[c] - XHAT * k_xhat[c]);
    }
#undef DZ
#undef XHAT
  }
  free(partial);
  free(total);
  free(scale);
  return 0;
}
