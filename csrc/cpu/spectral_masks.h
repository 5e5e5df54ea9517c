// The ReLU masks that spectral_transform_masked and fourier_unit_masked save
// for their backward (csrc/cpu/spectral.cpp): one bit per element, packed
// into whole bytes per row so that threads working on different rows never
// write the same byte.
//
// A mask row of `count` elements takes ceil(count / 8) bytes; element e is
// bit e % 8 (least significant first) of byte e / 8, and the bit is 1 where
// the element is > 0 (NaN gives 0). MaskLayout says which rows the one uint8
// tensor of an op holds and where.
#pragma once

#include <c10/util/BFloat16.h>

#include <cstdint>
#include <cstring>

#include "fft.h"  // LF_INLINE, LF_IVDEP

namespace lama_fast {
namespace masks {

inline int64_t row_bytes(int64_t count) { return (count + 7) / 8; }

// Where each mask lies in the op's uint8 tensor (byte offsets; a mask that
// the op does not have has no rows):
//   y    [y > 0], y = relu(x W1^T + b1): N * H rows (n, h) of W * Ch elements,
//        the channels-last row of y.
//   z    [Z > 0], Z = relu(spectrum W_freq^T + b_freq): N * Wf columns (n, kw)
//        of H * 2Ch elements (h, channel), Wf = W / 2 + 1; the channel order is
//        the pipeline's (split or interleaved, see spectral.cpp).
//   out  [out > 0] when the op ends in a ReLU: N * H rows of W * Cout elements.
// fourier_unit_masked has only z (Ch = its C).
struct MaskLayout {
  int64_t y_row = 0, y_rows = 0, y_offset = 0;
  int64_t z_col = 0, z_cols = 0, z_offset = 0;
  int64_t out_row = 0, out_rows = 0, out_offset = 0;
  int64_t total = 0;
};

inline MaskLayout mask_layout(int64_t N, int64_t C, int64_t Cout, int64_t H, int64_t W, bool relu,
                              bool fourier_only) {
  MaskLayout m;
  const int64_t Wf = W / 2 + 1;
  if (!fourier_only) {
    m.y_row = row_bytes(W * C);
    m.y_rows = N * H;
  }
  m.z_offset = m.y_row * m.y_rows;
  m.z_col = row_bytes(H * 2 * C);
  m.z_cols = N * Wf;
  m.out_offset = m.z_offset + m.z_col * m.z_cols;
  if (!fourier_only && relu) {
    m.out_row = row_bytes(W * Cout);
    m.out_rows = N * H;
  }
  m.total = m.out_offset + m.out_row * m.out_rows;
  return m;
}

// Whether an element is > 0, on its bits (branch-free, so that loops over
// elements vectorise): positive finite numbers and +inf have the sign bit
// clear and a nonzero pattern no larger than +inf's; NaN patterns are larger.
LF_INLINE uint32_t positive(float v) {
  uint32_t u;
  std::memcpy(&u, &v, sizeof(u));
  return u - 1u < 0x7F800000u;
}

LF_INLINE uint32_t positive(double v) {
  uint64_t u;
  std::memcpy(&u, &v, sizeof(u));
  return u - 1u < 0x7FF0000000000000ull;
}

LF_INLINE uint32_t positive(c10::BFloat16 v) { return static_cast<uint16_t>(v.x - 1u) < 0x7F80u; }

// The bits of `count` elements of src into ceil(count / 8) bytes at dst.
template <typename S>
LF_INLINE void pack(const S* __restrict src, int64_t count, uint8_t* __restrict dst) {
  const int64_t whole = count / 8;
  LF_IVDEP
  for (int64_t b = 0; b < whole; ++b) {
    const S* s = src + 8 * b;
    uint32_t byte = 0;
    for (int bit = 0; bit < 8; ++bit) byte |= positive(s[bit]) << bit;
    dst[b] = static_cast<uint8_t>(byte);
  }
  if (whole * 8 < count) {
    uint32_t byte = 0;
    for (int64_t e = whole * 8; e < count; ++e) byte |= positive(src[e]) << (e - whole * 8);
    dst[whole] = static_cast<uint8_t>(byte);
  }
}

// v where bit (0 or 1) is 1, else +0; on the bits, without a branch, so
// that loops over elements vectorise.
LF_INLINE float keep(float v, uint32_t bit) {
  uint32_t u;
  std::memcpy(&u, &v, sizeof(u));
  u &= 0u - bit;
  std::memcpy(&v, &u, sizeof(v));
  return v;
}

LF_INLINE double keep(double v, uint32_t bit) {
  uint64_t u;
  std::memcpy(&u, &v, sizeof(u));
  u &= uint64_t{0} - bit;
  std::memcpy(&v, &u, sizeof(v));
  return v;
}

LF_INLINE c10::BFloat16 keep(c10::BFloat16 v, uint32_t bit) {
  v.x = static_cast<uint16_t>(v.x & (0u - bit));
  return v;
}

// dst = src where the element's bit is set, 0 elsewhere, for `count`
// elements (dst may be src).
template <typename S>
LF_INLINE void select(const S* src, const uint8_t* __restrict bits, int64_t count, S* dst) {
  const int64_t whole = count / 8;
  for (int64_t b = 0; b < whole; ++b) {
    const uint32_t byte = bits[b];
    S v[8];
    for (int bit = 0; bit < 8; ++bit) v[bit] = keep(src[8 * b + bit], (byte >> bit) & 1u);
    for (int bit = 0; bit < 8; ++bit) dst[8 * b + bit] = v[bit];
  }
  for (int64_t e = whole * 8; e < count; ++e) dst[e] = keep(src[e], (bits[whole] >> (e - whole * 8)) & 1u);
}

}  // namespace masks
}  // namespace lama_fast
