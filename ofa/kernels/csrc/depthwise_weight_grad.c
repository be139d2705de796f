/* Weight gradient of a depthwise convolution on channels-last float32 tensors.

   gw[i][j][c] = sum over (n, oy, ox) of go[n][oy][ox][c] * x[n][oy*S + i - P][ox*S + j - P][c]
   with P = K / 2 (zero padding), x: N x H x W x C, go: N x OH x OW x C, gw: K x K x C.

   oneDNN's backward-weights kernel for 5x5 and 7x7 depthwise filters runs many times slower
   than its forward on CPUs (see ofa/kernels/depthwise.py). Here, for one (image, output row,
   kernel row) and 16 channels (then 8, then one at a time), the K column sums stay in
   registers over the output row, so each multiply-add loads one input vector. Each thread sums a fixed chunk of images into
   its own buffer; the buffers are added in thread order, so a thread count always gives the
   same result. Built and loaded by ofa/kernels/compiled.py. */
#include <stdlib.h>
#include <string.h>
#include <omp.h>

typedef float v8 __attribute__((vector_size(32), aligned(4)));
typedef float v16 __attribute__((vector_size(64), aligned(4)));
#define MAX_K 15

/* Column sums of one (image, output row, kernel row) for the channels [c, c + lanes of VEC). */
#define ROW_SUMS(NAME, VEC)                                                                   \
  static inline __attribute__((always_inline)) void                                          \
  NAME(const float* restrict xr, const float* restrict gr, float* restrict ar,               \
       int W, int C, int K, int S, int OW, int c) {                                          \
    const int P = K / 2;                                                                     \
    VEC s[MAX_K];                                                                            \
    for (int j = 0; j < K; j++) s[j] = (VEC){0};                                             \
    for (int ox = 0; ox < OW; ox++) {                                                        \
      VEC g = *(const VEC*)(gr + (size_t)ox * C + c);                                        \
      int base = ox * S - P;                                                                 \
      if (base >= 0 && base + K <= W) {                                                      \
        for (int j = 0; j < K; j++) s[j] += g * *(const VEC*)(xr + (size_t)(base + j) * C + c); \
      } else {                                                                               \
        for (int j = 0; j < K; j++) {                                                        \
          int ix = base + j;                                                                 \
          if (ix >= 0 && ix < W) s[j] += g * *(const VEC*)(xr + (size_t)ix * C + c);         \
        }                                                                                    \
      }                                                                                      \
    }                                                                                        \
    for (int j = 0; j < K; j++) *(VEC*)(ar + (size_t)j * C + c) += s[j];                     \
  }
ROW_SUMS(row_sums_16, v16)
ROW_SUMS(row_sums_8, v8)

static inline __attribute__((always_inline)) void
images(const float* restrict x, const float* restrict go, float* restrict acc,
       int n0, int n1, int H, int W, int C, int K, int S, int OH, int OW) {
  const int P = K / 2;
  for (int n = n0; n < n1; n++)
    for (int oy = 0; oy < OH; oy++)
      for (int i = 0; i < K; i++) {
        int iy = oy * S + i - P;
        if (iy < 0 || iy >= H) continue;
        const float* xr = x + ((size_t)n * H + iy) * W * C;
        const float* gr = go + ((size_t)n * OH + oy) * OW * C;
        float* ar = acc + (size_t)i * K * C;
        int c = 0;
        for (; c + 16 <= C; c += 16) row_sums_16(xr, gr, ar, W, C, K, S, OW, c);
        for (; c + 8 <= C; c += 8) row_sums_8(xr, gr, ar, W, C, K, S, OW, c);
        for (; c < C; c++)  /* channels beyond a multiple of 8 */
          for (int ox = 0; ox < OW; ox++)
            for (int j = 0; j < K; j++) {
              int ix = ox * S - P + j;
              if (ix >= 0 && ix < W) ar[(size_t)j * C + c] += gr[(size_t)ox * C + c] * xr[(size_t)ix * C + c];
            }
      }
}

/* Copies with K and S known at compile time: the column sums then live in registers. */
#define FIXED(KK, SS)                                                                        \
  static void images_##KK##_##SS(const float* x, const float* go, float* acc, int n0, int n1, \
                                 int H, int W, int C, int OH, int OW) {                      \
    images(x, go, acc, n0, n1, H, W, C, KK, SS, OH, OW);                                     \
  }
FIXED(3, 1) FIXED(3, 2) FIXED(5, 1) FIXED(5, 2) FIXED(7, 1) FIXED(7, 2)

/* Returns 0, or 1 when K is too large or memory ran out (the caller falls back). */
int depthwise_weight_grad(const float* restrict x, const float* restrict go, float* restrict gw,
                          int N, int H, int W, int C, int K, int S, int OH, int OW, int threads) {
  if (K > MAX_K || K < 1 || threads < 1) return 1;
  const size_t kkc = (size_t)K * K * C;
  float* partial = calloc((size_t)threads * kkc, sizeof(float));
  if (!partial) return 1;
#pragma omp parallel num_threads(threads)
  {
    int t = omp_get_thread_num(), T = omp_get_num_threads();
    int n0 = (int)((long)N * t / T), n1 = (int)((long)N * (t + 1) / T);
    float* acc = partial + (size_t)t * kkc;
    if (K == 3 && S == 1) images_3_1(x, go, acc, n0, n1, H, W, C, OH, OW);
    else if (K == 3 && S == 2) images_3_2(x, go, acc, n0, n1, H, W, C, OH, OW);
    else if (K == 5 && S == 1) images_5_1(x, go, acc, n0, n1, H, W, C, OH, OW);
    else if (K == 5 && S == 2) images_5_2(x, go, acc, n0, n1, H, W, C, OH, OW);
    else if (K == 7 && S == 1) images_7_1(x, go, acc, n0, n1, H, W, C, OH, OW);
    else if (K == 7 && S == 2) images_7_2(x, go, acc, n0, n1, H, W, C, OH, OW);
    else images(x, go, acc, n0, n1, H, W, C, K, S, OH, OW);
  }
  memcpy(gw, partial, kkc * sizeof(float));
  for (int t = 1; t < threads; t++)
    for (size_t q = 0; q < kkc; q++) gw[q] += partial[(size_t)t * kkc + q];
  free(partial);
  return 0;
}
