// Winograd F(4x4, 3x3) float32 convolution for LaMa's 3x3 stride-1 convs.
//
// lama_fast::winograd_weight(weight): (Cout, Cin, 3, 3) -> the transformed
//   weight U, shape (36, Cin, Cout); the order of its elements is private to
//   this file (64-wide column blocks, see packed_offset).
// lama_fast::conv3x3_winograd(x, packed_weight, bias, other, relu, reflect_pad):
//   x (N, Cin, H+2, W+2), already padded, any memory format (channels_last
//   avoids a copy) -> out (N, Cout, H, W) channels_last,
//   out = conv(x) + bias + other, then relu if asked. With reflect_pad = 1,
//   x is the unpadded (N, Cin, H, W) input and its reflect padding by one
//   pixel is read in place (no padded copy is made). packed_weight may also
//   be the plain (Cout, Cin, 3, 3) weight: it is then transformed on every
//   call into a buffer of the calling thread, so a model keeps 9 floats per
//   kernel instead of 36 (the transform costs ~1 % of the convolution).
// lama_fast::winograd_weight_transpose(packed_weight): the packed weight
//   (36, Cout, Cin) of the convolution that gives the input gradient of the
//   one of packed_weight (its kernels transposed and rotated by 180 degrees).
// lama_fast::winograd_isa(): which kernels run here ("avx512", "avx2" or
//   "generic"); LAMA_FAST_WINOGRAD_ISA=avx2|generic caps the choice.
// (Schemas in csrc/cpu/module.cpp.)
//
// Accuracy decides the tile. In a float32 model of the algorithm on LaMa's
// data (unit activations, weights ~ N(0, 1/(9 Cin))), the interpolation
// points 0, 1, -1, 1/2, -2 (and infinity) gave a relative error (max abs
// error / max |output|) of ~3e-6, the usual 0, +-1, +-2 ~8e-6, and
// F(6x6, 3x3) ~1.7e-5 (4e-6 from its transforms alone), over the 1e-5 limit.
// With the blocked sums of the GEMM (kSum) this file reaches ~1.2e-6, about
// the error of float32 F.conv2d.
//
// Each thread takes a contiguous share of the 4x4 output tiles and works
// through it in blocks of tiles. For each block and each K chunk of kKc input
// channels, the input transform writes V[36][tiles][kc] and 36 GEMMs
// accumulate M[36][tiles][Cout] += V U; then the output transform adds bias
// and other, applies relu and writes the output. Chunking K keeps V in L2
// between its transform and its GEMMs. The AVX-512 micro-kernel holds a 6x64
// block of M in registers and streams a kc x 64 weight panel that stays in
// L1 while it sweeps the rows of the block.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#if defined(__x86_64__) && defined(__GNUC__)
#define LAMA_WINOGRAD_X86 1
#include <immintrin.h>
#endif

#ifndef _OPENMP
#pragma message("winograd.cpp built without -fopenmp: at::parallel_for runs on one thread")
#endif

namespace lama_fast {
namespace {

constexpr int kOut = 4;          // output tile side
constexpr int kIn = 6;           // input tile side
constexpr int kPos = kIn * kIn;  // Winograd-domain positions
constexpr int kNr = 64;          // column block of the packed weight
constexpr int kMr = 6;           // rows (tiles) of the micro-kernels
constexpr int64_t kKc = 128;     // K (input channel) chunk
constexpr int kLanes = 16;       // channels per vector
constexpr int64_t kSum = 64;     // input channels summed in registers before they are added to M

constexpr double kPoints[kIn - 1] = {0.0, 1.0, -1.0, 0.5, -2.0};

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// Row stride in floats: whole vectors, and not a multiple of 4 KiB so that
// rows read together do not alias in the L1 cache.
inline int64_t padded_stride(int64_t n) {
  int64_t s = round_up(n, kLanes);
  if ((s * 4) % 4096 == 0) s += kLanes;
  return s;
}

struct Problem {
  int64_t batch, cin, cout, hp, wp, h, w;
  // Reflect padding done while reading: x holds src_h x src_w pixels and the
  // padded input (hp x wp) is virtual. pad == 0: x is the padded input itself.
  int64_t pad, src_h, src_w;
  int64_t tiles_h, tiles_w, tiles;
  const float* x;      // (N, Hp, Wp, Cin)
  const float* u;      // packed weight
  const float* bias;   // (Cout) or null
  const float* other;  // (N, H, W, Cout) or null
  float* out;          // (N, H, W, Cout)
  bool relu;
  int64_t kc;           // K chunk
  int64_t block_tiles;  // tiles per block (capacity of V and M)
  int64_t ldv, ldm;     // row strides of V and M
};

struct TilePos {
  int64_t n, y0, x0;
};

inline TilePos tile_pos(const Problem& p, int64_t t) {
  const int64_t per_image = p.tiles_h * p.tiles_w;
  const int64_t n = t / per_image;
  const int64_t r = t - n * per_image;
  const int64_t ty = r / p.tiles_w;
  return {n, ty * kOut, (r - ty * p.tiles_w) * kOut};
}

inline int64_t reflect_index(int64_t i, int64_t n) { return i < 0 ? -i : (i >= n ? 2 * (n - 1) - i : i); }

// Pixel (yp, xp) of the (virtual) padded input of image n, or null below or
// right of it (those read as zeros).
inline const float* source_pixel(const Problem& p, int64_t n, int64_t yp, int64_t xp) {
  if (yp >= p.hp || xp >= p.wp) return nullptr;
  const int64_t y = reflect_index(yp - p.pad, p.src_h);
  const int64_t x = reflect_index(xp - p.pad, p.src_w);
  return p.x + ((n * p.src_h + y) * p.src_w + x) * p.cin;
}

// Whether the six patch columns from xp = x0 lie side by side in x.
inline bool columns_contiguous(const Problem& p, int64_t x0) {
  return x0 - p.pad >= 0 && x0 - p.pad + kIn <= p.src_w;
}

// Offset of U[pos][ci][co] in the packed weight: for each position, the
// column blocks of kNr output channels one after another, each [Cin][width].
inline int64_t packed_offset(int64_t pos, int64_t ci, int64_t co, int64_t cin, int64_t cout) {
  const int64_t block = co / kNr;
  const int64_t width = std::min<int64_t>(kNr, cout - block * kNr);
  return pos * cin * cout + block * kNr * cin + ci * width + (co - block * kNr);
}

// B^T d for six values along one axis of the tile (scalar or vector T).
template <typename T>
__attribute__((always_inline)) inline void bt_column(T d0, T d1, T d2, T d3, T d4, T d5, T* r) {
  const T a = d3 - d1;
  const T b = d4 - d2;
  r[0] = (d0 + d4) - 2.0f * d2 + 1.5f * a;
  r[1] = (d4 - d1) + 0.5f * d2 + 2.5f * d3;
  r[2] = (d4 + d1) - 2.5f * d2 + 0.5f * d3;
  r[3] = b + 2.0f * a;
  r[4] = b - 0.5f * a;
  r[5] = (d5 + d1) - 2.0f * d3 + 1.5f * b;
}

// A^T m for six values along one axis.
template <typename T>
__attribute__((always_inline)) inline void at_column(T m0, T m1, T m2, T m3, T m4, T m5, T* o) {
  const T s = m1 + m2;
  const T t = m1 - m2;
  o[0] = (m0 + s) + (m3 + m4);
  o[1] = t + 0.5f * m3 - 2.0f * m4;
  o[2] = s + 0.25f * m3 + 4.0f * m4;
  o[3] = (t + m5) + 0.125f * m3 - 8.0f * m4;
}

// One panel of the GEMMs of a block (see gemm_generic): position pos's rows of
// V (a, ldv apart), its columns n0 .. n0 + width of M (c, ldm apart), and the
// rows k0 .. of that column block of the packed weight (b, width apart).
struct Panel {
  const float* a;
  float* c;
  const float* b;
  int64_t width;
};

// f(panel) for every position and column block of the GEMMs of a block.
template <typename F>
__attribute__((always_inline)) inline void for_each_panel(const Problem& p, int64_t k0, const float* v, float* m,
                                                          F&& f) {
  const int64_t plane_v = p.block_tiles * p.ldv;
  const int64_t plane_m = p.block_tiles * p.ldm;
  for (int pos = 0; pos < kPos; ++pos) {
    const float* u_pos = p.u + pos * p.cin * p.cout;
    for (int64_t n0 = 0; n0 < p.cout; n0 += kNr) {
      const int64_t width = std::min<int64_t>(kNr, p.cout - n0);
      f(Panel{v + pos * plane_v, m + pos * plane_m + n0, u_pos + n0 * p.cin + k0 * width, width});
    }
  }
}

// One row of a panel: c_row (+)= a b, every kSum input channels summed on
// their own, then added (the first K chunk, k0 = 0, overwrites).
__attribute__((always_inline)) inline void gemm_row(const float* a, const float* b, int64_t width, int64_t k0,
                                                    int64_t k_len, float* c_row) {
  for (int64_t k1 = 0; k1 < k_len; k1 += kSum) {
    float acc[kNr] = {};
    for (int64_t k = k1; k < std::min(k_len, k1 + kSum); ++k) {
      const float ak = a[k];
      const float* bk = b + k * width;
      for (int64_t c = 0; c < width; ++c) acc[c] += ak * bk[c];
    }
    for (int64_t c = 0; c < width; ++c) c_row[c] = k0 + k1 > 0 ? c_row[c] + acc[c] : acc[c];
  }
}

// The output pixels of one tile: rows x cols of them (fewer on the bottom and
// right edges), the first at pixel0 of the (N, H, W) output.
struct OutputTile {
  int64_t rows, cols, pixel0;
};

inline OutputTile output_tile(const Problem& p, int64_t t) {
  const TilePos tp = tile_pos(p, t);
  return {std::min<int64_t>(kOut, p.h - tp.y0), std::min<int64_t>(kOut, p.w - tp.x0),
          (tp.n * p.h + tp.y0) * p.w + tp.x0};
}

// ---------------------------------------------------------------------------
// Portable kernels: loops over kLanes channels that the compiler vectorizes.

// V[pos][t][0, k_len) for input channels [k0, k0 + k_len) of tiles t0...
void input_transform_generic(const Problem& p, int64_t t0, int64_t nt, int64_t k0, int64_t k_len, float* v) {
  const int64_t plane = p.block_tiles * p.ldv;
  for (int64_t t = 0; t < nt; ++t) {
    const TilePos tp = tile_pos(p, t0 + t);
    const float* pixels[kIn][kIn];
    for (int i = 0; i < kIn; ++i) {
      for (int j = 0; j < kIn; ++j) pixels[i][j] = source_pixel(p, tp.n, tp.y0 + i, tp.x0 + j);
    }
    for (int64_t c0 = 0; c0 < k_len; c0 += kLanes) {
      const int64_t lanes = std::min<int64_t>(kLanes, k_len - c0);
      float h[kIn][kIn][kLanes];  // rows of the patch times B
      for (int i = 0; i < kIn; ++i) {
        float d[kIn][kLanes];
        for (int j = 0; j < kIn; ++j) {
          const float* src = pixels[i][j] == nullptr ? nullptr : pixels[i][j] + k0 + c0;
          for (int l = 0; l < kLanes; ++l) d[j][l] = (src != nullptr && l < lanes) ? src[l] : 0.0f;
        }
        for (int l = 0; l < kLanes; ++l) {
          float r[kIn];
          bt_column(d[0][l], d[1][l], d[2][l], d[3][l], d[4][l], d[5][l], r);
          for (int j = 0; j < kIn; ++j) h[i][j][l] = r[j];
        }
      }
      for (int j = 0; j < kIn; ++j) {
        float r[kIn][kLanes];
        for (int l = 0; l < kLanes; ++l) {
          float c[kIn];
          bt_column(h[0][j][l], h[1][j][l], h[2][j][l], h[3][j][l], h[4][j][l], h[5][j][l], c);
          for (int i = 0; i < kIn; ++i) r[i][l] = c[i];
        }
        for (int i = 0; i < kIn; ++i) {
          float* dst = v + (i * kIn + j) * plane + t * p.ldv + c0;
          for (int l = 0; l < lanes; ++l) dst[l] = r[i][l];
        }
      }
    }
  }
}

// M[pos] (+)= V[pos] U[pos][k0:k0+k_len] for the nt tiles of a block; M is
// overwritten by the first K chunk and accumulated by the others. Every kSum
// input channels are summed in registers on their own, then added to M: one
// sequential float32 sum over Cin = 512 gave ~3.5x the error (the output
// transform amplifies the GEMM's rounding), ~4x that of float32 F.conv2d.
void gemm_generic(const Problem& p, int64_t nt, int64_t k0, int64_t k_len, const float* v, float* m) {
  for_each_panel(p, k0, v, m, [&](const Panel& q) {
    for (int64_t t = 0; t < nt; ++t) gemm_row(q.a + t * p.ldv, q.b, q.width, k0, k_len, q.c + t * p.ldm);
  });
}

// out = relu?(A^T M A + bias + other) for the tiles t0...
void output_transform_generic(const Problem& p, int64_t t0, int64_t nt, const float* m) {
  const int64_t plane = p.block_tiles * p.ldm;
  for (int64_t t = 0; t < nt; ++t) {
    const OutputTile tile = output_tile(p, t0 + t);
    for (int64_t c0 = 0; c0 < p.cout; c0 += kLanes) {
      const int64_t lanes = std::min<int64_t>(kLanes, p.cout - c0);
      float s[kOut][kIn][kLanes];  // A^T times the columns of the tile
      for (int j = 0; j < kIn; ++j) {
        for (int l = 0; l < kLanes; ++l) {
          const float* src = m + j * plane + t * p.ldm + c0 + l;
          float o[kOut];
          at_column(src[0], src[kIn * plane], src[2 * kIn * plane], src[3 * kIn * plane], src[4 * kIn * plane],
                    src[5 * kIn * plane], o);
          for (int i = 0; i < kOut; ++i) s[i][j][l] = o[i];
        }
      }
      for (int i = 0; i < tile.rows; ++i) {
        float y[kOut][kLanes];
        for (int l = 0; l < kLanes; ++l) {
          float o[kOut];
          at_column(s[i][0][l], s[i][1][l], s[i][2][l], s[i][3][l], s[i][4][l], s[i][5][l], o);
          for (int j = 0; j < kOut; ++j) y[j][l] = o[j];
        }
        for (int j = 0; j < tile.cols; ++j) {
          const int64_t offset = (tile.pixel0 + i * p.w + j) * p.cout + c0;
          float* dst = p.out + offset;
          for (int l = 0; l < lanes; ++l) {
            float value = y[j][l];
            if (p.bias) value += p.bias[c0 + l];
            if (p.other) value += p.other[offset + l];
            if (p.relu) value = std::max(value, 0.0f);
            dst[l] = value;
          }
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------
// The weight transform U = G k G^T of each 3x3 kernel, in float32, written in
// packed_offset's order: one output-channel block of kNr kernels at a time,
// lane by lane, so that the compiler vectorises over output channels. It
// runs on every call of conv3x3_winograd with a plain weight (about 160 flops
// a kernel, ~1 % of the convolution at LaMa's 64x64 maps), and once in
// winograd_weight.

// G (kIn x 3, see KernelTransform) rounded to float32.
struct FloatG {
  float g[kIn][3];
};

// Kernels ci0 .. ci1 - 1 of output-channel block `block` of the plain
// (Cout, Cin, 3, 3) weight w into the packed weight dst.
void pack_block_generic(const float* w, int64_t cin, int64_t cout, int64_t block, int64_t ci0, int64_t ci1,
                        const FloatG& t, float* dst) {
  const int64_t co0 = block * kNr;
  const int64_t width = std::min<int64_t>(kNr, cout - co0);
  alignas(64) float k[9][kNr];
  alignas(64) float gk[kIn][3][kNr];
  for (int e = 0; e < 9; ++e) std::fill(k[e] + width, k[e] + kNr, 0.0f);
  for (int64_t ci = ci0; ci < ci1; ++ci) {
    for (int64_t lane = 0; lane < width; ++lane) {
      const float* src = w + ((co0 + lane) * cin + ci) * 9;
      for (int e = 0; e < 9; ++e) k[e][lane] = src[e];
    }
    for (int i = 0; i < kIn; ++i) {
      const float g0 = t.g[i][0], g1 = t.g[i][1], g2 = t.g[i][2];
      for (int c = 0; c < 3; ++c) {
        for (int lane = 0; lane < kNr; ++lane) gk[i][c][lane] = g0 * k[c][lane] + g1 * k[3 + c][lane] + g2 * k[6 + c][lane];
      }
    }
    float* base = dst + co0 * cin + ci * width;
    for (int i = 0; i < kIn; ++i) {
      for (int j = 0; j < kIn; ++j) {
        const float h0 = t.g[j][0], h1 = t.g[j][1], h2 = t.g[j][2];
        float* row = base + (i * kIn + j) * cin * cout;
        for (int64_t lane = 0; lane < width; ++lane) {
          row[lane] = gk[i][0][lane] * h0 + gk[i][1][lane] * h1 + gk[i][2][lane] * h2;
        }
      }
    }
  }
}

#ifdef LAMA_WINOGRAD_X86
// ---------------------------------------------------------------------------
// AVX2 + FMA kernels: the portable transforms compiled for AVX2, and a 6x16
// GEMM micro-kernel (12 accumulators in the 16 ymm registers).
#pragma GCC push_options
#pragma GCC target("avx2,fma")

__attribute__((flatten)) void input_transform_avx2(const Problem& p, int64_t t0, int64_t nt, int64_t k0,
                                                   int64_t k_len, float* v) {
  input_transform_generic(p, t0, nt, k0, k_len, v);
}

__attribute__((flatten)) void output_transform_avx2(const Problem& p, int64_t t0, int64_t nt, const float* m) {
  output_transform_generic(p, t0, nt, m);
}

__attribute__((flatten)) void pack_block_avx2(const float* w, int64_t cin, int64_t cout, int64_t block,
                                              int64_t ci0, int64_t ci1, const FloatG& t, float* dst) {
  pack_block_generic(w, cin, cout, block, ci0, ci1, t, dst);
}

// C[MR x 16] (+)= A[MR x K] B[K x 16].
template <int MR>
void gemm_ukernel_avx2(int64_t k_len, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
                       int64_t ldc, bool accumulate) {
  __m256 acc[MR][2];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    acc[i][0] = _mm256_setzero_ps();
    acc[i][1] = _mm256_setzero_ps();
  }
  for (int64_t k = 0; k < k_len; ++k) {
    const __m256 b0 = _mm256_loadu_ps(b);
    const __m256 b1 = _mm256_loadu_ps(b + 8);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m256 av = _mm256_broadcast_ss(a + i * lda + k);
      acc[i][0] = _mm256_fmadd_ps(av, b0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(av, b1, acc[i][1]);
    }
    b += ldb;
  }
  if (accumulate) {
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      acc[i][0] = _mm256_add_ps(acc[i][0], _mm256_loadu_ps(c + i * ldc));
      acc[i][1] = _mm256_add_ps(acc[i][1], _mm256_loadu_ps(c + i * ldc + 8));
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    _mm256_storeu_ps(c + i * ldc, acc[i][0]);
    _mm256_storeu_ps(c + i * ldc + 8, acc[i][1]);
  }
}

using UkernelAvx2 = void (*)(int64_t, const float*, int64_t, const float*, int64_t, float*, int64_t, bool);

// The micro-kernels by rows (1 .. kMr).
constexpr UkernelAvx2 kUkernelsAvx2[kMr + 1] = {nullptr,
                                                gemm_ukernel_avx2<1>,
                                                gemm_ukernel_avx2<2>,
                                                gemm_ukernel_avx2<3>,
                                                gemm_ukernel_avx2<4>,
                                                gemm_ukernel_avx2<5>,
                                                gemm_ukernel_avx2<6>};

void gemm_avx2(const Problem& p, int64_t nt, int64_t k0, int64_t k_len, const float* v, float* m) {
  const int64_t plane_v = p.block_tiles * p.ldv;
  const int64_t plane_m = p.block_tiles * p.ldm;
  for (int pos = 0; pos < kPos; ++pos) {
    const float* u_pos = p.u + pos * p.cin * p.cout;
    const float* a_pos = v + pos * plane_v;
    float* c_pos = m + pos * plane_m;
    for (int64_t n0 = 0; n0 < p.cout; n0 += kNr) {
      const int64_t width = std::min<int64_t>(kNr, p.cout - n0);
      const float* b = u_pos + n0 * p.cin + k0 * width;
      const int64_t full = width / 16 * 16;
      for (int64_t j = 0; j < full; j += 16) {
        for (int64_t m0 = 0; m0 < nt; m0 += kMr) {
          const UkernelAvx2 kernel = kUkernelsAvx2[std::min<int64_t>(kMr, nt - m0)];
          for (int64_t k1 = 0; k1 < k_len; k1 += kSum) {
            kernel(std::min(kSum, k_len - k1), a_pos + m0 * p.ldv + k1, p.ldv, b + k1 * width + j, width,
                   c_pos + m0 * p.ldm + n0 + j, p.ldm, k0 + k1 > 0);
          }
        }
      }
      for (int64_t t = 0; t < nt && full < width; ++t) {  // the last width % 16 columns
        const float* a = a_pos + t * p.ldv;
        float* c_row = c_pos + t * p.ldm + n0;
        for (int64_t j = full; j < width; ++j) {
          for (int64_t k1 = 0; k1 < k_len; k1 += kSum) {
            float sum = 0.0f;
            for (int64_t k = k1; k < std::min(k_len, k1 + kSum); ++k) sum += a[k] * b[k * width + j];
            c_row[j] = k0 + k1 > 0 ? c_row[j] + sum : sum;
          }
        }
      }
    }
  }
}

#pragma GCC pop_options

// ---------------------------------------------------------------------------
// AVX-512 kernels.
#pragma GCC push_options
#pragma GCC target("avx512f,fma")

inline __mmask16 lane_mask(int64_t lanes) {
  return lanes >= kLanes ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << lanes) - 1u);
}

// One group of 16 channels of one tile; row[i] points at pixel 0 of patch row
// i, or is null for a row below the input. FULL: the whole 6x6 patch lies in
// the input and all 16 channels exist; otherwise missing pixels read as zero
// and only the lanes in `mask` are touched.
template <bool FULL>
__attribute__((always_inline)) inline void input_group_avx512(const float* const* row, int64_t pixel_stride,
                                                              int64_t cols, __mmask16 mask, float* dst,
                                                              int64_t plane) {
  __m512 h[kIn][kIn];  // rows of the patch times B
#pragma GCC unroll 6
  for (int i = 0; i < kIn; ++i) {
    __m512 d[kIn];
#pragma GCC unroll 6
    for (int j = 0; j < kIn; ++j) {
      if (FULL) {
        d[j] = _mm512_loadu_ps(row[i] + j * pixel_stride);
      } else {
        d[j] = (row[i] != nullptr && j < cols) ? _mm512_maskz_loadu_ps(mask, row[i] + j * pixel_stride)
                                               : _mm512_setzero_ps();
      }
    }
    bt_column(d[0], d[1], d[2], d[3], d[4], d[5], h[i]);
  }
#pragma GCC unroll 6
  for (int j = 0; j < kIn; ++j) {
    __m512 r[kIn];
    bt_column(h[0][j], h[1][j], h[2][j], h[3][j], h[4][j], h[5][j], r);
#pragma GCC unroll 6
    for (int i = 0; i < kIn; ++i) {
      if (FULL) {
        _mm512_storeu_ps(dst + (i * kIn + j) * plane, r[i]);
      } else {
        _mm512_mask_storeu_ps(dst + (i * kIn + j) * plane, mask, r[i]);
      }
    }
  }
}

__attribute__((flatten)) void pack_block_avx512(const float* w, int64_t cin, int64_t cout, int64_t block,
                                                int64_t ci0, int64_t ci1, const FloatG& t, float* dst) {
  pack_block_generic(w, cin, cout, block, ci0, ci1, t, dst);
}

void input_transform_avx512(const Problem& p, int64_t t0, int64_t nt, int64_t k0, int64_t k_len, float* v) {
  const int64_t plane = p.block_tiles * p.ldv;
  const int64_t full_groups = k_len / kLanes;
  const __mmask16 tail_mask = lane_mask(k_len % kLanes);
  alignas(64) float patch[kIn][kIn][kLanes];
  for (int64_t t = 0; t < nt; ++t) {
    const TilePos tp = tile_pos(p, t0 + t);
    const int64_t rows = std::min<int64_t>(kIn, p.hp - tp.y0);
    const int64_t cols = std::min<int64_t>(kIn, p.wp - tp.x0);
    float* dst = v + t * p.ldv;
    const float* row[kIn];
    if (!columns_contiguous(p, tp.x0)) {
      // A tile on the left or right border: gather its (reflected) pixels into
      // a 6x6 patch of kLanes channels, then transform that.
      for (int64_t c0 = 0; c0 < k_len; c0 += kLanes) {
        const __mmask16 mask = lane_mask(k_len - c0);
        for (int i = 0; i < kIn; ++i) {
          for (int j = 0; j < kIn; ++j) {
            const float* src = source_pixel(p, tp.n, tp.y0 + i, tp.x0 + j);
            _mm512_store_ps(patch[i][j], src == nullptr ? _mm512_setzero_ps()
                                                        : _mm512_maskz_loadu_ps(mask, src + k0 + c0));
          }
          row[i] = patch[i][0];
        }
        input_group_avx512<false>(row, kLanes, kIn, mask, dst + c0, plane);
      }
      continue;
    }
    const bool inside = rows == kIn && cols == kIn;
    for (int64_t c0 = 0; c0 < k_len; c0 += kLanes) {
      for (int i = 0; i < kIn; ++i) {
        const float* src = i < rows ? source_pixel(p, tp.n, tp.y0 + i, tp.x0) : nullptr;
        row[i] = src == nullptr ? nullptr : src + k0 + c0;
      }
      if (c0 < full_groups * kLanes) {
        if (inside) {
          input_group_avx512<true>(row, p.cin, cols, 0xFFFF, dst + c0, plane);
        } else {
          input_group_avx512<false>(row, p.cin, cols, 0xFFFF, dst + c0, plane);
        }
      } else {
        input_group_avx512<false>(row, p.cin, cols, tail_mask, dst + c0, plane);
      }
    }
  }
}

// C[MR x 16*NV] (+)= A[MR x K] B[K x width]; the last vector of B is masked
// when TAIL (width not a multiple of 16). C rows are whole vectors.
template <int MR, int NV, bool TAIL>
void gemm_ukernel_avx512(int64_t k_len, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
                         int64_t ldc, bool accumulate, __mmask16 tail) {
  __m512 acc[MR][NV];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) acc[i][j] = _mm512_setzero_ps();
  }
  for (int64_t k = 0; k < k_len; ++k) {
    __m512 bv[NV];
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) {
      bv[j] = (TAIL && j == NV - 1) ? _mm512_maskz_loadu_ps(tail, b + 16 * j) : _mm512_loadu_ps(b + 16 * j);
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m512 av = _mm512_set1_ps(a[i * lda + k]);
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) acc[i][j] = _mm512_fmadd_ps(av, bv[j], acc[i][j]);
    }
    b += ldb;
  }
  if (accumulate) {
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) acc[i][j] = _mm512_add_ps(acc[i][j], _mm512_loadu_ps(c + i * ldc + 16 * j));
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) _mm512_storeu_ps(c + i * ldc + 16 * j, acc[i][j]);
  }
}

using UkernelAvx512 = void (*)(int64_t, const float*, int64_t, const float*, int64_t, float*, int64_t, bool,
                               __mmask16);

template <int MR>
UkernelAvx512 pick_ukernel_avx512_rows(int64_t nv, bool tail) {
  switch (nv) {
    case 1: return tail ? gemm_ukernel_avx512<MR, 1, true> : gemm_ukernel_avx512<MR, 1, false>;
    case 2: return tail ? gemm_ukernel_avx512<MR, 2, true> : gemm_ukernel_avx512<MR, 2, false>;
    case 3: return tail ? gemm_ukernel_avx512<MR, 3, true> : gemm_ukernel_avx512<MR, 3, false>;
    default: return tail ? gemm_ukernel_avx512<MR, 4, true> : gemm_ukernel_avx512<MR, 4, false>;
  }
}

UkernelAvx512 pick_ukernel_avx512(int64_t mr, int64_t nv, bool tail) {
  switch (mr) {
    case 1: return pick_ukernel_avx512_rows<1>(nv, tail);
    case 2: return pick_ukernel_avx512_rows<2>(nv, tail);
    case 3: return pick_ukernel_avx512_rows<3>(nv, tail);
    case 4: return pick_ukernel_avx512_rows<4>(nv, tail);
    case 5: return pick_ukernel_avx512_rows<5>(nv, tail);
    default: return pick_ukernel_avx512_rows<6>(nv, tail);
  }
}

void gemm_avx512(const Problem& p, int64_t nt, int64_t k0, int64_t k_len, const float* v, float* m) {
  for_each_panel(p, k0, v, m, [&](const Panel& q) {
    const int64_t nv = ceil_div(q.width, kLanes);
    const bool tail = q.width % kLanes != 0;
    const __mmask16 tail_mask = lane_mask(q.width % kLanes);
    const UkernelAvx512 full_rows = pick_ukernel_avx512(kMr, nv, tail);
    for (int64_t m0 = 0; m0 < nt; m0 += kMr) {
      const int64_t mr = std::min<int64_t>(kMr, nt - m0);
      const UkernelAvx512 kernel = mr == kMr ? full_rows : pick_ukernel_avx512(mr, nv, tail);
      for (int64_t k1 = 0; k1 < k_len; k1 += kSum) {
        kernel(std::min(kSum, k_len - k1), q.a + m0 * p.ldv + k1, p.ldv, q.b + k1 * q.width, q.width,
               q.c + m0 * p.ldm, p.ldm, k0 + k1 > 0, tail_mask);
      }
    }
  });
}

void output_transform_avx512(const Problem& p, int64_t t0, int64_t nt, const float* m) {
  const int64_t plane = p.block_tiles * p.ldm;
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t t = 0; t < nt; ++t) {
    const OutputTile tile = output_tile(p, t0 + t);
    const int64_t rows = tile.rows, cols = tile.cols, pixel0 = tile.pixel0;
    const float* src_tile = m + t * p.ldm;
    for (int64_t c0 = 0; c0 < p.cout; c0 += kLanes) {
      const __mmask16 mask = lane_mask(p.cout - c0);
      const bool full = mask == 0xFFFF && rows == kOut && cols == kOut;
      __m512 s[kOut][kIn];  // A^T times the columns of the tile
#pragma GCC unroll 6
      for (int j = 0; j < kIn; ++j) {
        const float* src = src_tile + j * plane + c0;
        __m512 o[kOut];
        at_column(_mm512_loadu_ps(src), _mm512_loadu_ps(src + kIn * plane), _mm512_loadu_ps(src + 2 * kIn * plane),
                  _mm512_loadu_ps(src + 3 * kIn * plane), _mm512_loadu_ps(src + 4 * kIn * plane),
                  _mm512_loadu_ps(src + 5 * kIn * plane), o);
#pragma GCC unroll 4
        for (int i = 0; i < kOut; ++i) s[i][j] = o[i];
      }
      const __m512 bias = p.bias ? _mm512_maskz_loadu_ps(mask, p.bias + c0) : zero;
#pragma GCC unroll 4
      for (int i = 0; i < kOut; ++i) {
        if (i >= rows) break;
        __m512 y[kOut];
        at_column(s[i][0], s[i][1], s[i][2], s[i][3], s[i][4], s[i][5], y);
        float* out_row = p.out + (pixel0 + i * p.w) * p.cout + c0;
        const float* other_row = p.other ? p.other + (pixel0 + i * p.w) * p.cout + c0 : nullptr;
        if (full) {
#pragma GCC unroll 4
          for (int j = 0; j < kOut; ++j) {
            __m512 value = _mm512_add_ps(y[j], bias);
            if (other_row) value = _mm512_add_ps(value, _mm512_loadu_ps(other_row + j * p.cout));
            if (p.relu) value = _mm512_max_ps(value, zero);
            _mm512_storeu_ps(out_row + j * p.cout, value);
          }
        } else {
          for (int j = 0; j < cols; ++j) {
            __m512 value = _mm512_add_ps(y[j], bias);
            if (other_row) value = _mm512_add_ps(value, _mm512_maskz_loadu_ps(mask, other_row + j * p.cout));
            if (p.relu) value = _mm512_max_ps(value, zero);
            _mm512_mask_storeu_ps(out_row + j * p.cout, mask, value);
          }
        }
      }
    }
  }
}

#pragma GCC pop_options
#endif  // LAMA_WINOGRAD_X86

// ---------------------------------------------------------------------------
// Dispatch, work buffers, threading.

struct Kernels {
  void (*input)(const Problem&, int64_t, int64_t, int64_t, int64_t, float*);
  void (*gemm)(const Problem&, int64_t, int64_t, int64_t, const float*, float*);
  void (*output)(const Problem&, int64_t, int64_t, const float*);
  void (*pack)(const float*, int64_t, int64_t, int64_t, int64_t, int64_t, const FloatG&, float*);
  const char* name;
};

// The best kernels this CPU runs, or lower ones that LAMA_FAST_WINOGRAD_ISA
// (avx2 or generic) asks for; read on every call so that tests can switch.
Kernels select_kernels() {
  const char* env = std::getenv("LAMA_FAST_WINOGRAD_ISA");
  const std::string cap = env ? env : "";
#ifdef LAMA_WINOGRAD_X86
  static const bool has_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  static const bool has_avx512 = has_avx2 && __builtin_cpu_supports("avx512f");
  if (has_avx512 && cap != "generic" && cap != "avx2") {
    return {input_transform_avx512, gemm_avx512, output_transform_avx512, pack_block_avx512, "avx512"};
  }
  if (has_avx2 && cap != "generic") {
    return {input_transform_avx2, gemm_avx2, output_transform_avx2, pack_block_avx2, "avx2"};
  }
#endif
  return {input_transform_generic, gemm_generic, output_transform_generic, pack_block_generic, "generic"};
}

// Per-thread buffer reused between calls (the threads of the pool persist).
class Workspace {
 public:
  ~Workspace() { std::free(data_); }
  float* get(int64_t floats) {
    const size_t bytes = static_cast<size_t>(round_up(floats * 4, 64));
    if (bytes > capacity_) {
      std::free(data_);
      capacity_ = 0;
      data_ = static_cast<float*>(std::aligned_alloc(64, bytes));
      TORCH_CHECK(data_ != nullptr, "conv3x3_winograd: out of memory for a ", bytes, "-byte work buffer");
      capacity_ = bytes;
    }
    return data_;
  }

 private:
  float* data_ = nullptr;
  size_t capacity_ = 0;
};

thread_local Workspace tls_workspace;
// The packed weight of a call with a plain weight, per calling thread.
thread_local Workspace tls_packed;

// Tiles per block: V and M of one block (36 * tiles * (ldv + ldm) floats)
// take about 1.5 MiB, measured best on LaMa's shapes with a 1 MiB L2 per
// core: larger blocks push V and M out to L3, smaller ones re-read the
// weight (36 * Cin * Cout floats, from L3) more often.
int64_t max_block_tiles(int64_t ldv, int64_t ldm) {
  constexpr int64_t kBudgetFloats = (int64_t{3} << 19) / 4;
  const int64_t fit = kBudgetFloats / (kPos * (ldv + ldm)) / kMr * kMr;
  return std::max<int64_t>(kMr, std::min<int64_t>(96, fit));
}

void run_conv(Problem& p, const Kernels& kernels) {
  // One contiguous share of the tiles per thread, cut into equal blocks.
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), ceil_div(p.tiles, kMr)));
  const int64_t share = ceil_div(p.tiles, threads);
  p.kc = ceil_div(p.cin, ceil_div(p.cin, kKc));
  p.ldv = padded_stride(p.kc);
  p.ldm = padded_stride(p.cout);
  const int64_t blocks = ceil_div(share, max_block_tiles(p.ldv, p.ldm));
  p.block_tiles = round_up(ceil_div(share, blocks), kMr);
  const Problem& q = p;
  at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
    float* v = tls_workspace.get(kPos * q.block_tiles * (q.ldv + q.ldm));
    float* m = v + kPos * q.block_tiles * q.ldv;
    for (int64_t thread = begin; thread < end; ++thread) {
      const int64_t last = q.tiles * (thread + 1) / threads;
      for (int64_t t0 = q.tiles * thread / threads; t0 < last; t0 += q.block_tiles) {
        const int64_t nt = std::min(q.block_tiles, last - t0);
        for (int64_t k0 = 0; k0 < q.cin; k0 += q.kc) {
          const int64_t k_len = std::min(q.kc, q.cin - k0);
          kernels.input(q, t0, nt, k0, k_len, v);
          kernels.gemm(q, nt, k0, k_len, v, m);
        }
        kernels.output(q, t0, nt, m);
      }
    }
  });
}

// ---------------------------------------------------------------------------
// Ops.

// G, the 6x3 kernel transform of the interpolation points: row j is
// (1, p, p^2) / prod_{l != j} (p - p_l); the last row is infinity's.
struct KernelTransform {
  double g[kIn][3];

  KernelTransform() {
    for (int j = 0; j < kIn - 1; ++j) {
      double denom = 1.0;
      for (int l = 0; l < kIn - 1; ++l) {
        if (l != j) denom *= kPoints[j] - kPoints[l];
      }
      g[j][0] = 1.0 / denom;
      g[j][1] = kPoints[j] / denom;
      g[j][2] = kPoints[j] * kPoints[j] / denom;
    }
    g[kIn - 1][0] = 0.0;
    g[kIn - 1][1] = 0.0;
    g[kIn - 1][2] = 1.0;
  }

  // u = G k G^T (6x6, row-major, u[i * 6 + j] is position i * 6 + j) of a
  // 3x3 kernel k (row-major).
  void apply(const double* k, double* u) const {
    double gk[kIn][3];  // G k
    for (int i = 0; i < kIn; ++i) {
      for (int c = 0; c < 3; ++c) gk[i][c] = g[i][0] * k[c] + g[i][1] * k[3 + c] + g[i][2] * k[6 + c];
    }
    for (int i = 0; i < kIn; ++i) {
      for (int j = 0; j < kIn; ++j) u[i * kIn + j] = gk[i][0] * g[j][0] + gk[i][1] * g[j][1] + gk[i][2] * g[j][2];
    }
  }
};

// The 3x6 left inverse L of G (L G = I) that recovers k = L u L^T from a
// transformed kernel u whose elements carry independent relative rounding
// errors: least squares over all six rows, each row of G scaled to unit norm
// first, so that every equation weighs by its accuracy rather than its scale.
struct KernelRecovery {
  double l[3][kIn];

  explicit KernelRecovery(const KernelTransform& t) {
    double gn[kIn][3];  // D G, D = diag(1 / |row|)
    double scale[kIn];
    for (int i = 0; i < kIn; ++i) {
      scale[i] = 1.0 / std::sqrt(t.g[i][0] * t.g[i][0] + t.g[i][1] * t.g[i][1] + t.g[i][2] * t.g[i][2]);
      for (int c = 0; c < 3; ++c) gn[i][c] = t.g[i][c] * scale[i];
    }
    double a[3][3];  // (D G)^T (D G)
    for (int r = 0; r < 3; ++r) {
      for (int c = 0; c < 3; ++c) {
        a[r][c] = 0.0;
        for (int i = 0; i < kIn; ++i) a[r][c] += gn[i][r] * gn[i][c];
      }
    }
    // Its inverse by cofactors (symmetric positive definite, well conditioned).
    double inv[3][3];
    for (int r = 0; r < 3; ++r) {
      for (int c = 0; c < 3; ++c) {
        const int r1 = (c + 1) % 3, r2 = (c + 2) % 3, c1 = (r + 1) % 3, c2 = (r + 2) % 3;
        inv[r][c] = a[r1][c1] * a[r2][c2] - a[r1][c2] * a[r2][c1];
      }
    }
    const double det = a[0][0] * inv[0][0] + a[0][1] * inv[1][0] + a[0][2] * inv[2][0];
    for (int r = 0; r < 3; ++r) {
      for (int i = 0; i < kIn; ++i) {
        double sum = 0.0;
        for (int c = 0; c < 3; ++c) sum += inv[r][c] * gn[i][c];
        l[r][i] = sum / det * scale[i];  // ((D G)^T D G)^-1 (D G)^T D
      }
    }
  }

  // k = L u L^T (3x3, row-major) of a 6x6 transformed kernel u (row-major).
  void apply(const double* u, double* k) const {
    double lu[3][kIn];  // L u
    for (int r = 0; r < 3; ++r) {
      for (int j = 0; j < kIn; ++j) {
        double sum = 0.0;
        for (int i = 0; i < kIn; ++i) sum += l[r][i] * u[i * kIn + j];
        lu[r][j] = sum;
      }
    }
    for (int r = 0; r < 3; ++r) {
      for (int c = 0; c < 3; ++c) {
        double sum = 0.0;
        for (int j = 0; j < kIn; ++j) sum += lu[r][j] * l[c][j];
        k[r * 3 + c] = sum;
      }
    }
  }
};

// G rounded to float32, for the weight transform.
const FloatG& float_g() {
  static const FloatG g = [] {
    const KernelTransform t;
    FloatG f{};
    for (int i = 0; i < kIn; ++i) {
      for (int c = 0; c < 3; ++c) f.g[i][c] = static_cast<float>(t.g[i][c]);
    }
    return f;
  }();
  return g;
}

// Input channels per task of the weight transform.
constexpr int64_t kPackChannels = 32;

// The packed weight of the contiguous float32 (Cout, Cin, 3, 3) weight w
// into dst (36 * Cin * Cout floats).
void pack_weight(const float* w, int64_t cin, int64_t cout, float* dst, const Kernels& kernels) {
  const FloatG& g = float_g();
  const int64_t blocks = ceil_div(cout, kNr);
  const int64_t chunks = ceil_div(cin, kPackChannels);
  at::parallel_for(0, blocks * chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t block = task / chunks;
      const int64_t ci0 = (task - block * chunks) * kPackChannels;
      kernels.pack(w, cin, cout, block, ci0, std::min(cin, ci0 + kPackChannels), g, dst);
    }
  });
}

// The checks on a plain weight, for `op`.
void check_plain_weight(const at::Tensor& weight, const char* op) {
  TORCH_CHECK(weight.dim() == 4 && weight.size(2) == 3 && weight.size(3) == 3, op,
              ": expected a weight of shape (Cout, Cin, 3, 3), got ", weight.sizes());
  TORCH_CHECK(weight.scalar_type() == at::kFloat, op, ": expected a float32 weight, got ", weight.scalar_type());
  TORCH_CHECK(weight.size(0) > 0 && weight.size(1) > 0, op, ": expected a non-empty weight, got ", weight.sizes());
}

at::Tensor winograd_weight(const at::Tensor& weight) {
  check_plain_weight(weight, "winograd_weight");
  const int64_t cout = weight.size(0);
  const int64_t cin = weight.size(1);
  const at::Tensor w = weight.contiguous();
  at::Tensor packed = at::empty({kPos, cin, cout}, weight.options());
  pack_weight(w.data_ptr<float>(), cin, cout, packed.data_ptr<float>(), select_kernels());
  return packed;
}

// The packed weight of the convolution that gives a convolution's input
// gradient: for packed = winograd_weight(w), winograd_weight(w') with
// w'[ci][co] = w[co][ci] rotated by 180 degrees, shape (36, Cout, Cin). The
// kernels w are recovered from the packed weight in double precision.
at::Tensor winograd_weight_transpose(const at::Tensor& packed) {
  TORCH_CHECK(packed.dim() == 3 && packed.size(0) == kPos,
              "winograd_weight_transpose: expected a packed weight of shape (36, Cin, Cout) from winograd_weight, "
              "got ", packed.sizes());
  TORCH_CHECK(packed.scalar_type() == at::kFloat,
              "winograd_weight_transpose: expected a float32 packed weight, got ", packed.scalar_type());
  TORCH_CHECK(packed.is_contiguous(), "winograd_weight_transpose: the packed weight must be contiguous");
  const int64_t cin = packed.size(1);
  const int64_t cout = packed.size(2);
  TORCH_CHECK(cout > 0 && cin > 0, "winograd_weight_transpose: expected a non-empty packed weight, got ",
              packed.sizes());
  const KernelTransform transform;
  const KernelRecovery recovery(transform);
  at::Tensor result = at::empty({kPos, cout, cin}, packed.options());
  const float* src = packed.data_ptr<float>();
  float* dst = result.data_ptr<float>();
  // The transposed convolution has cout input and cin output channels.
  at::parallel_for(0, cin, 16, [&](int64_t begin, int64_t end) {
    for (int64_t ci = begin; ci < end; ++ci) {
      for (int64_t co = 0; co < cout; ++co) {
        double u[kPos], k[9], rotated[9];
        for (int pos = 0; pos < kPos; ++pos) u[pos] = src[packed_offset(pos, ci, co, cin, cout)];
        recovery.apply(u, k);
        for (int e = 0; e < 9; ++e) rotated[e] = k[8 - e];
        transform.apply(rotated, u);
        for (int pos = 0; pos < kPos; ++pos) dst[packed_offset(pos, co, ci, cout, cin)] = static_cast<float>(u[pos]);
      }
    }
  });
  return result;
}

at::Tensor conv3x3_winograd(const at::Tensor& x, const at::Tensor& packed_weight, const std::optional<at::Tensor>& bias,
                            const std::optional<at::Tensor>& other, bool relu, int64_t reflect_pad) {
  TORCH_CHECK(reflect_pad == 0 || reflect_pad == 1, "conv3x3_winograd: reflect_pad must be 0 or 1, got ",
              reflect_pad);
  TORCH_CHECK(x.dim() == 4, "conv3x3_winograd: expected x of shape (N, Cin, H+2, W+2), got ", x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat, "conv3x3_winograd: expected float32 x, got ", x.scalar_type());
  const bool plain = packed_weight.dim() == 4;
  if (plain) {
    check_plain_weight(packed_weight, "conv3x3_winograd");
    TORCH_CHECK(packed_weight.is_contiguous(), "conv3x3_winograd: the weight must be contiguous");
  } else {
    TORCH_CHECK(packed_weight.dim() == 3 && packed_weight.size(0) == kPos,
                "conv3x3_winograd: expected a weight of shape (Cout, Cin, 3, 3) or a packed weight of shape "
                "(36, Cin, Cout) from winograd_weight, got ", packed_weight.sizes());
    TORCH_CHECK(packed_weight.scalar_type() == at::kFloat, "conv3x3_winograd: expected a float32 packed weight, got ",
                packed_weight.scalar_type());
    TORCH_CHECK(packed_weight.is_contiguous(), "conv3x3_winograd: the packed weight must be contiguous");
  }
  const int64_t batch = x.size(0);
  const int64_t cin = x.size(1);
  const int64_t cout = packed_weight.size(plain ? 0 : 2);
  const int64_t weight_cin = packed_weight.size(1);
  TORCH_CHECK(weight_cin == cin, "conv3x3_winograd: x has ", cin, " channels, the weight expects ", weight_cin);
  if (reflect_pad) {
    TORCH_CHECK(x.size(2) >= 2 && x.size(3) >= 2,
                "conv3x3_winograd: reflect padding needs at least 2x2 pixels, got ", x.sizes());
  } else {
    TORCH_CHECK(x.size(2) >= 3 && x.size(3) >= 3, "conv3x3_winograd: x must be padded to at least 3x3, got ",
                x.sizes());
  }
  const int64_t h = x.size(2) + 2 * reflect_pad - 2;
  const int64_t w = x.size(3) + 2 * reflect_pad - 2;
  at::Tensor out = at::empty({batch, cout, h, w}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  at::Tensor bias_c;
  at::Tensor other_c;
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->scalar_type() == at::kFloat, "conv3x3_winograd: expected a float32 bias, got ",
                bias->scalar_type());
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == cout, "conv3x3_winograd: expected a bias of shape (", cout,
                "), got ", bias->sizes());
    bias_c = bias->contiguous();
  }
  if (other.has_value() && other->defined()) {
    TORCH_CHECK(other->scalar_type() == at::kFloat, "conv3x3_winograd: expected float32 other, got ",
                other->scalar_type());
    TORCH_CHECK(other->sizes() == out.sizes(), "conv3x3_winograd: expected other of shape ", out.sizes(), ", got ",
                other->sizes());
    other_c = other->contiguous(at::MemoryFormat::ChannelsLast);
  }
  if (out.numel() == 0) return out;
  const at::Tensor xc = x.contiguous(at::MemoryFormat::ChannelsLast);

  Problem p{};
  p.batch = batch;
  p.cin = cin;
  p.cout = cout;
  p.pad = reflect_pad;
  p.src_h = x.size(2);
  p.src_w = x.size(3);
  p.hp = x.size(2) + 2 * reflect_pad;
  p.wp = x.size(3) + 2 * reflect_pad;
  p.h = h;
  p.w = w;
  p.tiles_h = ceil_div(h, kOut);
  p.tiles_w = ceil_div(w, kOut);
  p.tiles = batch * p.tiles_h * p.tiles_w;
  p.x = xc.data_ptr<float>();
  const Kernels kernels = select_kernels();
  if (plain) {
    float* u = tls_packed.get(kPos * cin * cout);
    pack_weight(packed_weight.data_ptr<float>(), cin, cout, u, kernels);
    p.u = u;
  } else {
    p.u = packed_weight.data_ptr<float>();
  }
  p.bias = bias_c.defined() ? bias_c.data_ptr<float>() : nullptr;
  p.other = other_c.defined() ? other_c.data_ptr<float>() : nullptr;
  p.out = out.data_ptr<float>();
  p.relu = relu;
  run_conv(p, kernels);
  return out;
}

std::string winograd_isa() { return select_kernels().name; }

}  // namespace

TORCH_LIBRARY_IMPL(lama_fast, CPU, m) {
  m.impl("winograd_weight", &winograd_weight);
  m.impl("conv3x3_winograd", &conv3x3_winograd);
  m.impl("winograd_weight_transpose", &winograd_weight_transpose);
}

// No tensor arguments to dispatch on: one kernel for every backend.
TORCH_LIBRARY_IMPL(lama_fast, CompositeImplicitAutograd, m) { m.impl("winograd_isa", &winograd_isa); }

}  // namespace lama_fast
