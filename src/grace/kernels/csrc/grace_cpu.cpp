// grace native CPU kernels for packed linears (built at first use by grace/kernels/native.py).
//
// Invariant: these kernels read the *published* packed buffers directly (AWQ GEMM qweight for
// W4, row-major int8 codes for W8); the only cached extras are the group scales (and scale*zero
// products) in fp32, permuted so one vector load serves 16 outputs. So a model costs the same
// memory with these kernels as on disk, unlike torch's int4 kernels, which need a repacked copy.
//
// Why: batch-1 decode on a CPU is bound by memory bandwidth. Reading 4 (or 8) bits per weight
// plus 1/128 of an fp16 scale, and doing the dequantisation in registers, streams 3.9x (2x)
// fewer bytes than a 16-bit dense matmul. Products and sums are fp32 (codes and bf16/fp16
// activations are exact in fp32), so results match the fp32 reference to rounding error.
//
// Ops (namespace grace_native):
//   w8_linear(x (M,K) float, q int8 (N,K), s f32 (N,G), bias?) -> (M,N) in x's dtype
//   w4_linear(x (M,K) float, qweight int32 (K,N/8), sp f32, zp f32, inv_perm int64 (N), bias?)
//   lsq_forward(w f32 (R,G,gs), s f32 (R,G,1), qmin, qmax) -> clamp(round(w/s), qmin, qmax) * s
//   lsq_backward(g, w, s, qmin, qmax) -> (dL/dw, dL/ds): the LSQ straight-through gradients
//   isa() -> 512 if the AVX-512 paths were compiled in, else 0.
// The lsq ops are QAT's fake quantization fused into one pass each way (torch needs ~4 passes
// forward and ~10 backward over the weights); values are bit-identical to the torch composition
// (IEEE division, round-half-to-even, fp32 product), gradients equal up to summation order.
// Large M (prefill) dequantises chunks of the weight into x's dtype and calls ATen's GEMM, which
// is compute-bound there and beats any GEMV-style loop.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <tuple>
#include <cstring>
#include <cstdint>
#include <vector>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#include <immintrin.h>
#define GRACE_AVX512 1
#else
#define GRACE_AVX512 0
#endif

namespace {

// Above these batch sizes, dequantising L2-sized chunks of the weight and calling ATen's GEMM beats
// the GEMV-style loops (W4's loop re-reads its L1 partial sums once per activation row).
constexpr int64_t kW8GemvMaxM = 16;
constexpr int64_t kW4GemvMaxM = 4;
constexpr int64_t kChunkRows = 1024;  // fewer, larger chunks: each one is a parallel region

// Store 16 fp32 lanes as T (fp32, or bf16 rounded to nearest even like torch's .to(bfloat16)), so
// the prefill path dequantises straight into the GEMM's dtype without an extra conversion pass.
inline void store_row(float* dst, const float* src, int64_t n) { std::copy(src, src + n, dst); }
inline void store_row(c10::BFloat16* dst, const float* src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = c10::BFloat16(src[i]);
}
#if GRACE_AVX512
inline void store16(float* dst, __m512 v) { _mm512_storeu_ps(dst, v); }
inline void store16(c10::BFloat16* dst, __m512 v) {
#if defined(__AVX512BF16__)
  const __m256bh r = _mm512_cvtneps_pbh(v);
  std::memcpy(dst, &r, 32);
#else
  alignas(64) float tmp[16];
  _mm512_store_ps(tmp, v);
  store_row(dst, tmp, 16);
#endif
}
#endif

// ------------------------------------------------------------------------------------------------
// W8: q (N, K) int8 row-major, s (N, G) fp32, group size gs = K / G.
// y[m, n] = sum_g s[n, g] * sum_{j < gs} x[m, g*gs + j] * q[n, g*gs + j]
// ------------------------------------------------------------------------------------------------
#if GRACE_AVX512
// One tile: RB weight rows x MB activation rows. Per group, p[r][m] accumulates x*q in fp32 (16
// lanes); at the group end acc[r][m] += s[n+r, g] * p[r][m]. The lanes are summed once per row.
template <int RB, int MB>
inline void w8_tile(const float* x, int64_t K, const int8_t* q, const float* s, int64_t G, int64_t gs,
                    float* y, int64_t N, int64_t n) {
  __m512 acc[RB][MB];
  for (int r = 0; r < RB; ++r)
    for (int m = 0; m < MB; ++m) acc[r][m] = _mm512_setzero_ps();
  for (int64_t g = 0; g < G; ++g) {
    __m512 p[RB][MB];
    for (int r = 0; r < RB; ++r)
      for (int m = 0; m < MB; ++m) p[r][m] = _mm512_setzero_ps();
    const int64_t k0 = g * gs;
    for (int64_t j = 0; j < gs; j += 16) {
      const int64_t off = k0 + j;
      const int64_t len = std::min<int64_t>(16, gs - j);
      const __mmask16 mask = len == 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << len) - 1);
      __m512 xv[MB];
      for (int m = 0; m < MB; ++m) xv[m] = _mm512_maskz_loadu_ps(mask, x + m * K + off);
      for (int r = 0; r < RB; ++r) {
        const __m128i b = _mm_maskz_loadu_epi8(mask, q + (n + r) * K + off);
        const __m512 w = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b));
        for (int m = 0; m < MB; ++m) p[r][m] = _mm512_fmadd_ps(w, xv[m], p[r][m]);
      }
    }
    for (int r = 0; r < RB; ++r) {
      const __m512 sv = _mm512_set1_ps(s[(n + r) * G + g]);
      for (int m = 0; m < MB; ++m) acc[r][m] = _mm512_fmadd_ps(p[r][m], sv, acc[r][m]);
    }
  }
  for (int r = 0; r < RB; ++r)
    for (int m = 0; m < MB; ++m) y[m * N + n + r] = _mm512_reduce_add_ps(acc[r][m]);
}

template <int MB>
inline void w8_rows(const float* x, int64_t K, const int8_t* q, const float* s, int64_t G, int64_t gs,
                    float* y, int64_t N, int64_t n0, int64_t n1) {
  // Four independent weight rows per tile keep the FMA units busy at batch 1 (a single
  // accumulator chain would stall on FMA latency); fewer rows when more activation rows share it.
  constexpr int RB = MB <= 2 ? 4 : 2;
  int64_t n = n0;
  for (; n + RB <= n1; n += RB) w8_tile<RB, MB>(x, K, q, s, G, gs, y, N, n);
  for (; n < n1; ++n) w8_tile<1, MB>(x, K, q, s, G, gs, y, N, n);
}
#endif

void w8_rows_scalar(const float* x, int64_t K, const int8_t* q, const float* s, int64_t G, int64_t gs,
                    float* y, int64_t N, int64_t M, int64_t n0, int64_t n1) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = n0; n < n1; ++n) {
      float acc = 0.f;
      for (int64_t g = 0; g < G; ++g) {
        float p = 0.f;
        for (int64_t j = 0; j < gs; ++j) p += x[m * K + g * gs + j] * (float)q[n * K + g * gs + j];
        acc += s[n * G + g] * p;
      }
      y[m * N + n] = acc;
    }
}

void w8_gemv(const float* x, int64_t M, int64_t K, const int8_t* q, const float* s, int64_t G, float* y,
             int64_t N) {
  const int64_t gs = K / G;
  at::parallel_for(0, N, 16, [&](int64_t n0, int64_t n1) {
#if GRACE_AVX512
    int64_t m = 0;
    for (; m + 4 <= M; m += 4) w8_rows<4>(x + m * K, K, q, s, G, gs, y + m * N, N, n0, n1);
    if (M - m == 3) w8_rows<3>(x + m * K, K, q, s, G, gs, y + m * N, N, n0, n1);
    if (M - m == 2) w8_rows<2>(x + m * K, K, q, s, G, gs, y + m * N, N, n0, n1);
    if (M - m == 1) w8_rows<1>(x + m * K, K, q, s, G, gs, y + m * N, N, n0, n1);
#else
    w8_rows_scalar(x, K, q, s, G, gs, y, N, M, n0, n1);
#endif
  });
}

// Dense rows [n0, n1) of the W8 weight, as T.
template <typename T>
void w8_dequant_rows(const int8_t* q, const float* s, int64_t K, int64_t G, T* w, int64_t n0, int64_t n1) {
  const int64_t gs = K / G;
  at::parallel_for(n0, n1, 8, [&](int64_t a, int64_t b) {
    alignas(64) float tmp[16];
    for (int64_t n = a; n < b; ++n) {
      T* out = w + (n - n0) * K;
      const int8_t* qr = q + n * K;
      for (int64_t g = 0; g < G; ++g) {
        const float sc = s[n * G + g];
        for (int64_t j = 0; j < gs; j += 16) {
          const int64_t len = std::min<int64_t>(16, gs - j);
#if GRACE_AVX512
          if (len == 16) {
            const __m512 wv = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)(qr + g * gs + j))));
            store16(out + g * gs + j, _mm512_mul_ps(wv, _mm512_set1_ps(sc)));
            continue;
          }
#endif
          for (int64_t l = 0; l < len; ++l) tmp[l] = sc * (float)qr[g * gs + j + l];
          store_row(out + g * gs + j, tmp, len);
        }
      }
    }
  });
}

// ------------------------------------------------------------------------------------------------
// W4, AWQ GEMM layout: qweight (K, N/8) int32; nibble t of word (i, c) holds the unsigned code of
// output 8c + ORDER[t]. A "block" is 16 consecutive words (128 outputs); one 512-bit load reads a
// block's row i, and (word >> 4t) & 15 gives, in 16 lanes, the codes of outputs 8(c0+l)+ORDER[t].
// The cached sp / zp arrays hold s and s*z in exactly that permuted order, [G][blocks][8][16], so
// y_perm[m][blk][t][l] = sum_g sp * (sum_i x*u) - zp * (sum_i x); inv_perm maps it back to the
// output order. Lanes past N/8 read zero (masked loads) and are never copied out.
// ------------------------------------------------------------------------------------------------
#if GRACE_AVX512
// Groups [g0, g1) x blocks [b0, b1), all M activation rows, accumulated into yp. The weight rows
// are read in address order (row i, then row i+1), so the hardware prefetchers see one forward
// stream; the per-group partial sums p live in a small L1-resident buffer (M x blocks x 128
// floats) instead of registers, because a register tile narrow enough to fit would walk the
// weight with a 2 KB+ stride, which measured slower (TLB and prefetcher misses).
void w4_blocks(const float* x, const float* xsum, int64_t M, int64_t K, const int32_t* qw, int64_t W,
               const float* sp, const float* zp, int64_t G, int64_t gs, int64_t nblk, int64_t g0, int64_t g1,
               int64_t b0, int64_t b1, float* yp, int64_t Np) {
  const int64_t nb = b1 - b0;
  // 64-byte aligned (ATen's CPU allocator) so no 512-bit load/store straddles two cache lines.
  at::Tensor pbuf = at::empty({M * nb * 128}, at::TensorOptions().dtype(at::kFloat));
  float* p = pbuf.data_ptr<float>();
  const __m512 codes_f = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (int64_t g = g0; g < g1; ++g) {
    std::fill(p, p + M * nb * 128, 0.f);
    for (int64_t i = g * gs; i < (g + 1) * gs; ++i) {
      const int32_t* row = qw + i * W;
      for (int64_t b = 0; b < nb; ++b) {
        const int64_t c0 = (b0 + b) * 16;
        const __mmask16 mask = (W - c0 >= 16) ? (__mmask16)0xFFFF : (__mmask16)((1u << (W - c0)) - 1);
        const __m512i v = _mm512_maskz_loadu_epi32(mask, row + c0);
        __m512 u[8];
        // vpermps reads only the low 4 bits of each index lane, so a shift plus a 16-entry
        // table lookup turns nibble t into a float without a mask or a conversion.
        u[0] = _mm512_permutexvar_ps(v, codes_f);
        for (int t = 1; t < 8; ++t) u[t] = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4 * t), codes_f);
        for (int64_t m = 0; m < M; ++m) {
          const __m512 xb = _mm512_set1_ps(x[m * K + i]);
          float* pm = p + (m * nb + b) * 128;
          for (int t = 0; t < 8; ++t)
            _mm512_storeu_ps(pm + 16 * t, _mm512_fmadd_ps(u[t], xb, _mm512_loadu_ps(pm + 16 * t)));
        }
      }
    }
    // Fold the group: y += s * p - (s * z) * sum(x over the group).
    for (int64_t b = 0; b < nb; ++b) {
      const float* sg = sp + (g * nblk + b0 + b) * 128;
      const float* zg = zp + (g * nblk + b0 + b) * 128;
      for (int64_t m = 0; m < M; ++m) {
        const __m512 xs = _mm512_set1_ps(xsum[m * G + g]);
        const float* pm = p + (m * nb + b) * 128;
        float* ym = yp + m * Np + (b0 + b) * 128;
        for (int t = 0; t < 8; ++t) {
          __m512 acc = _mm512_loadu_ps(ym + 16 * t);
          acc = _mm512_fmadd_ps(_mm512_loadu_ps(pm + 16 * t), _mm512_loadu_ps(sg + 16 * t), acc);
          acc = _mm512_fnmadd_ps(_mm512_loadu_ps(zg + 16 * t), xs, acc);
          _mm512_storeu_ps(ym + 16 * t, acc);
        }
      }
    }
  }
}
#endif

void w4_block_scalar(const float* x, const float* xsum, int64_t K, const int32_t* qw, int64_t W,
                     const float* sp, const float* zp, int64_t G, int64_t gs, int64_t nblk, int64_t blk,
                     float* yp, int64_t Np, int64_t M) {
  for (int64_t m = 0; m < M; ++m)
    for (int t = 0; t < 8; ++t)
      for (int l = 0; l < 16; ++l) {
        const int64_t c = blk * 16 + l;
        float tot = 0.f;
        if (c < W) {
          for (int64_t g = 0; g < G; ++g) {
            float p = 0.f;
            for (int64_t i = g * gs; i < (g + 1) * gs; ++i)
              p += x[m * K + i] * (float)((qw[i * W + c] >> (4 * t)) & 15);
            const int64_t e = (g * nblk + blk) * 128 + 16 * t + l;
            tot += sp[e] * p - zp[e] * xsum[m * G + g];
          }
        }
        yp[m * Np + blk * 128 + 16 * t + l] = tot;
      }
}

void w4_gemv(const float* x, const float* xsum, int64_t M, int64_t K, const int32_t* qw, int64_t W,
             const float* sp, const float* zp, int64_t G, float* yp) {
  const int64_t gs = K / G;
  const int64_t nblk = (W + 15) / 16;
  const int64_t Np = nblk * 128;
  std::fill(yp, yp + M * Np, 0.f);
#if GRACE_AVX512
  const int64_t nt = std::min<int64_t>(at::get_num_threads(), G);
  if (nt > 1) {
    // Threads split the *input rows* (whole groups): each reads one contiguous slab of qweight
    // front to back into its own partial outputs, summed at the end. (Splitting the output
    // blocks instead makes every thread read part of every row; measured slower with cold
    // caches.)
    at::Tensor part_t = at::zeros({nt * M * Np}, at::TensorOptions().dtype(at::kFloat));
    float* part = part_t.data_ptr<float>();
    at::parallel_for(0, nt, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t)
        w4_blocks(x, xsum, M, K, qw, W, sp, zp, G, gs, nblk, G * t / nt, G * (t + 1) / nt, 0, nblk,
                  part + t * M * Np, Np);
    });
    for (int64_t t = 0; t < nt; ++t)
      for (int64_t j = 0; j < M * Np; ++j) yp[j] += part[t * M * Np + j];
  } else {
    w4_blocks(x, xsum, M, K, qw, W, sp, zp, G, gs, nblk, 0, G, 0, nblk, yp, Np);
  }
#else
  at::parallel_for(0, nblk, 4, [&](int64_t b0, int64_t b1) {
    for (int64_t blk = b0; blk < b1; ++blk) w4_block_scalar(x, xsum, K, qw, W, sp, zp, G, gs, nblk, blk, yp, Np, M);
  });
#endif
}

// Dense rows [i0, i1) of the transposed, *permuted* W4 weight as T: wp[i][blk*128 + 16t + l].
template <typename T>
void w4_dequant_rows(const int32_t* qw, int64_t W, const float* sp, const float* zp, int64_t G, int64_t gs,
                     T* wp, int64_t Np, int64_t i0, int64_t i1) {
  const int64_t nblk = Np / 128;
  at::parallel_for(i0, i1, 16, [&](int64_t a, int64_t b) {
    alignas(64) float tmp[16];
    for (int64_t i = a; i < b; ++i) {
      const int64_t g = i / gs;
      T* out = wp + (i - i0) * Np;
      for (int64_t blk = 0; blk < nblk; ++blk) {
        const float* sg = sp + (g * nblk + blk) * 128;
        const float* zg = zp + (g * nblk + blk) * 128;
#if GRACE_AVX512
        const int64_t c0 = blk * 16;
        const __mmask16 mask = (W - c0 >= 16) ? (__mmask16)0xFFFF : (__mmask16)((1u << (W - c0)) - 1);
        const __m512i v = _mm512_maskz_loadu_epi32(mask, qw + i * W + c0);
        const __m512 codes_f = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        for (int t = 0; t < 8; ++t) {
          const __m512 u = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4 * t), codes_f);
          store16(out + blk * 128 + 16 * t,
                  _mm512_fmsub_ps(u, _mm512_loadu_ps(sg + 16 * t), _mm512_loadu_ps(zg + 16 * t)));
        }
#else
        for (int t = 0; t < 8; ++t) {
          for (int l = 0; l < 16; ++l) {
            const int64_t c = blk * 16 + l;
            const float u = c < W ? (float)((qw[i * W + c] >> (4 * t)) & 15) : 0.f;
            tmp[l] = sg[16 * t + l] * u - zg[16 * t + l];
          }
          store_row(out + blk * 128 + 16 * t, tmp, 16);
        }
#endif
      }
    }
  });
}

// The dtype the prefill GEMM runs in: x's own for bf16 / fp32; fp32 (then converted) otherwise.
at::ScalarType gemm_dtype(const at::Tensor& x) {
  return x.scalar_type() == at::kBFloat16 ? at::kBFloat16 : at::kFloat;
}

// ------------------------------------------------------------------------------------------------
// Op entry points
// ------------------------------------------------------------------------------------------------
void check_x(const at::Tensor& x, int64_t K, const char* op) {
  TORCH_CHECK(x.dim() == 2 && x.size(1) == K, op, ": x must be (M, ", K, "), got ", x.sizes());
  TORCH_CHECK(x.device().is_cpu(), op, ": x must be on the CPU");
}

at::Tensor finish(at::Tensor y, const at::Tensor& x, const std::optional<at::Tensor>& bias) {
  at::Tensor out = y.to(x.scalar_type());
  if (bias.has_value() && bias->defined()) out.add_(bias->to(x.scalar_type()));
  return out;
}

at::Tensor w8_linear(const at::Tensor& x, const at::Tensor& q, const at::Tensor& s,
                     const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(q.dim() == 2 && q.scalar_type() == at::kChar && q.is_contiguous(), "w8_linear: q must be contiguous int8 (N, K)");
  const int64_t N = q.size(0), K = q.size(1);
  TORCH_CHECK(s.dim() == 2 && s.size(0) == N && s.scalar_type() == at::kFloat && s.is_contiguous(),
              "w8_linear: s must be contiguous fp32 (N, G)");
  const int64_t G = s.size(1);
  TORCH_CHECK(G > 0 && K % G == 0, "w8_linear: G must divide K");
  check_x(x, K, "w8_linear");
  const int64_t M = x.size(0);
  if (M > kW8GemvMaxM) {
    // Prefill: dequantise row chunks straight into the GEMM dtype; ATen's GEMM does the work.
    const at::ScalarType dt = gemm_dtype(x);
    at::Tensor xg = x.to(dt);
    at::Tensor out = at::empty({M, N}, x.options().dtype(dt));
    at::Tensor buf = at::empty({std::min(kChunkRows, N), K}, x.options().dtype(dt));
    for (int64_t n0 = 0; n0 < N; n0 += kChunkRows) {
      const int64_t n1 = std::min(N, n0 + kChunkRows);
      at::Tensor wb = buf.narrow(0, 0, n1 - n0);
      if (dt == at::kBFloat16)
        w8_dequant_rows(q.data_ptr<int8_t>(), s.data_ptr<float>(), K, G, wb.data_ptr<c10::BFloat16>(), n0, n1);
      else
        w8_dequant_rows(q.data_ptr<int8_t>(), s.data_ptr<float>(), K, G, wb.data_ptr<float>(), n0, n1);
      out.narrow(1, n0, n1 - n0).copy_(at::mm(xg, wb.t()));
    }
    return finish(out, x, bias);
  }
  at::Tensor xf = x.to(at::kFloat).contiguous();
  at::Tensor y = at::empty({M, N}, x.options().dtype(at::kFloat));
  w8_gemv(xf.data_ptr<float>(), M, K, q.data_ptr<int8_t>(), s.data_ptr<float>(), G, y.data_ptr<float>(), N);
  return finish(y, x, bias);
}

at::Tensor w4_linear(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& sp, const at::Tensor& zp,
                     const at::Tensor& inv_perm, const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(qweight.dim() == 2 && qweight.scalar_type() == at::kInt && qweight.is_contiguous(),
              "w4_linear: qweight must be contiguous int32 (K, N/8)");
  const int64_t K = qweight.size(0), W = qweight.size(1);
  const int64_t nblk = (W + 15) / 16, Np = nblk * 128;
  TORCH_CHECK(sp.scalar_type() == at::kFloat && sp.is_contiguous() && sp.dim() == 4 && sp.size(1) == nblk,
              "w4_linear: sp must be contiguous fp32 (G, blocks, 8, 16)");
  TORCH_CHECK(zp.sizes() == sp.sizes() && zp.scalar_type() == at::kFloat && zp.is_contiguous(),
              "w4_linear: zp must match sp");
  const int64_t G = sp.size(0);
  TORCH_CHECK(G > 0 && K % G == 0, "w4_linear: G must divide K");
  TORCH_CHECK(inv_perm.scalar_type() == at::kLong && inv_perm.numel() == W * 8, "w4_linear: inv_perm must be int64 (N)");
  check_x(x, K, "w4_linear");
  const int64_t M = x.size(0), gs = K / G;
  if (M > kW4GemvMaxM) {
    // Prefill: dequantise chunks of input rows (whole groups) straight into the GEMM dtype, in
    // the permuted output order, accumulate x[:, chunk] @ w_chunk, then un-permute the columns.
    const at::ScalarType dt = gemm_dtype(x);
    at::Tensor xg = x.to(dt);
    at::Tensor outp = at::empty({M, Np}, x.options().dtype(dt));
    const int64_t chunk = std::max<int64_t>(gs, (kChunkRows / gs) * gs);
    at::Tensor buf = at::empty({std::min(chunk, K), Np}, x.options().dtype(dt));
    for (int64_t i0 = 0; i0 < K; i0 += chunk) {
      const int64_t i1 = std::min(K, i0 + chunk);
      at::Tensor wb = buf.narrow(0, 0, i1 - i0);
      if (dt == at::kBFloat16)
        w4_dequant_rows(qweight.data_ptr<int32_t>(), W, sp.data_ptr<float>(), zp.data_ptr<float>(), G, gs,
                        wb.data_ptr<c10::BFloat16>(), Np, i0, i1);
      else
        w4_dequant_rows(qweight.data_ptr<int32_t>(), W, sp.data_ptr<float>(), zp.data_ptr<float>(), G, gs,
                        wb.data_ptr<float>(), Np, i0, i1);
      at::Tensor xc = xg.narrow(1, i0, i1 - i0);
      if (i0 == 0) at::mm_out(outp, xc, wb); else outp.addmm_(xc, wb);
    }
    return finish(outp.index_select(1, inv_perm), x, bias);
  }
  at::Tensor xf = x.to(at::kFloat).contiguous();
  at::Tensor xsum = xf.view({M, G, gs}).sum(-1).contiguous();
  at::Tensor yp = at::empty({M, Np}, x.options().dtype(at::kFloat));
  w4_gemv(xf.data_ptr<float>(), xsum.data_ptr<float>(), M, K, qweight.data_ptr<int32_t>(), W,
          sp.data_ptr<float>(), zp.data_ptr<float>(), G, yp.data_ptr<float>());
  return finish(yp.index_select(1, inv_perm), x, bias);
}

// ------------------------------------------------------------------------------------------------
// LSQ fake quantization (training): w and g are (R, G, gs) fp32, s is one scale per group.
// ------------------------------------------------------------------------------------------------
void check_lsq(const at::Tensor& w, const at::Tensor& s, const char* op) {
  TORCH_CHECK(w.dim() == 3 && w.scalar_type() == at::kFloat && w.is_contiguous() && w.device().is_cpu(), op,
              ": w must be contiguous fp32 (R, G, gs) on the CPU, got ", w.sizes(), " ", w.scalar_type());
  TORCH_CHECK(s.scalar_type() == at::kFloat && s.is_contiguous() && s.numel() == w.size(0) * w.size(1), op,
              ": s must be contiguous fp32 with one scale per group");
}

int64_t lsq_grain(int64_t gs) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(gs, 1)); }

at::Tensor lsq_forward(const at::Tensor& w, const at::Tensor& s, int64_t qmin, int64_t qmax) {
  check_lsq(w, s, "lsq_forward");
  at::Tensor out = at::empty_like(w);
  const int64_t n = w.size(0) * w.size(1), gs = w.size(2);
  const float* wp = w.data_ptr<float>();
  const float* sp = s.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const float lo = float(qmin), hi = float(qmax);
  at::parallel_for(0, n, lsq_grain(gs), [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) {
      const float sc = sp[k];
      const float* wi = wp + k * gs;
      float* oi = op + k * gs;
      int64_t j = 0;
#if GRACE_AVX512
      const __m512 vs = _mm512_set1_ps(sc), vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
      for (; j + 16 <= gs; j += 16) {
        __m512 r = _mm512_roundscale_ps(_mm512_div_ps(_mm512_loadu_ps(wi + j), vs),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        r = _mm512_min_ps(vhi, _mm512_max_ps(vlo, r));  // operand order keeps NaN, as torch.clamp does
        _mm512_storeu_ps(oi + j, _mm512_mul_ps(r, vs));
      }
#endif
      for (; j < gs; ++j) oi[j] = std::min(std::max(std::nearbyint(wi[j] / sc), lo), hi) * sc;
    }
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> lsq_backward(const at::Tensor& g, const at::Tensor& w, const at::Tensor& s,
                                                int64_t qmin, int64_t qmax) {
  check_lsq(w, s, "lsq_backward");
  at::Tensor gc = g.to(at::kFloat).contiguous();
  TORCH_CHECK(gc.sizes() == w.sizes(), "lsq_backward: g must have w's shape");
  at::Tensor gw = at::empty_like(w);
  at::Tensor gsc = at::empty(s.sizes(), s.options());
  const int64_t n = w.size(0) * w.size(1), gs = w.size(2);
  const float* wp = w.data_ptr<float>();
  const float* gp = gc.data_ptr<float>();
  const float* sp = s.data_ptr<float>();
  float* gwp = gw.data_ptr<float>();
  float* gsp = gsc.data_ptr<float>();
  const float lo = float(qmin), hi = float(qmax);
  at::parallel_for(0, n, lsq_grain(gs), [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) {
      const float sc = sp[k];
      const float* wi = wp + k * gs;
      const float* gi = gp + k * gs;
      float* oi = gwp + k * gs;
      float acc = 0.f;
      int64_t j = 0;
#if GRACE_AVX512
      const __m512 vs = _mm512_set1_ps(sc), vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
      __m512 vacc = _mm512_setzero_ps();
      for (; j + 16 <= gs; j += 16) {
        const __m512 v = _mm512_div_ps(_mm512_loadu_ps(wi + j), vs);
        const __m512 r = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        const __mmask16 in = _mm512_cmp_ps_mask(r, vlo, _CMP_GE_OQ) & _mm512_cmp_ps_mask(r, vhi, _CMP_LE_OQ);
        const __m512 gv = _mm512_loadu_ps(gi + j);
        _mm512_storeu_ps(oi + j, _mm512_maskz_mov_ps(in, gv));
        // t = r - v inside the code range, the clamped code outside it
        const __m512 t = _mm512_mask_sub_ps(_mm512_min_ps(vhi, _mm512_max_ps(vlo, r)), in, r, v);
        vacc = _mm512_fmadd_ps(gv, t, vacc);
      }
      acc = _mm512_reduce_add_ps(vacc);
#endif
      for (; j < gs; ++j) {
        const float v = wi[j] / sc, r = std::nearbyint(v);
        const bool in = r >= lo && r <= hi;
        oi[j] = in ? gi[j] : 0.f;
        acc += gi[j] * (in ? r - v : std::min(std::max(r, lo), hi));
      }
      gsp[k] = acc;
    }
  });
  return {gw, gsc};
}

int64_t isa() { return GRACE_AVX512 ? 512 : 0; }

}  // namespace

TORCH_LIBRARY(grace_native, m) {
  m.def("w8_linear(Tensor x, Tensor q, Tensor s, Tensor? bias) -> Tensor");
  m.def("w4_linear(Tensor x, Tensor qweight, Tensor sp, Tensor zp, Tensor inv_perm, Tensor? bias) -> Tensor");
  m.def("lsq_forward(Tensor w, Tensor s, int qmin, int qmax) -> Tensor");
  m.def("lsq_backward(Tensor g, Tensor w, Tensor s, int qmin, int qmax) -> (Tensor, Tensor)");
  m.def("isa() -> int");
}

TORCH_LIBRARY_IMPL(grace_native, CPU, m) {
  m.impl("w8_linear", &w8_linear);
  m.impl("w4_linear", &w4_linear);
  m.impl("lsq_forward", &lsq_forward);
  m.impl("lsq_backward", &lsq_backward);
}

TORCH_LIBRARY_IMPL(grace_native, CompositeExplicitAutograd, m) { m.impl("isa", &isa); }
