// Bit masks of where an activation is positive, for the backward passes of
// fused ops that end in a ReLU: one bit per element instead of the output.
//
// lama_fast::relu_mask(x): x (N, C, H, W) float32, float64 or bfloat16, any
//   memory format -> uint8 (N, H, ceil(W * C / 8)). Row (n, h) holds the bits
//   of x[n, :, h, :] in channels-last order: element e = w * C + c is bit
//   e % 8 (least significant first) of byte e / 8; the bit is 1 where x > 0
//   (NaN gives 0). Each row is whole bytes, so the mask of a band of rows of x
//   is the same band of rows of the mask.
// lama_fast::apply_mask(grad, bits): a new channels-last tensor equal to grad
//   where the bit of the element is 1 and 0 elsewhere (grad is never written).
// (Schemas in csrc/cpu/module.cpp.)

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "spectral_masks.h"  // masks::pack, masks::row_bytes

namespace lama_fast {
namespace {

// Rows per task of at::parallel_for: about 64 Ki elements each.
inline int64_t grain_rows(int64_t row_elements) { return std::max<int64_t>(1, (int64_t{1} << 16) / row_elements); }

// The unsigned integer of an element's size: masking works on the bits.
template <typename T>
using Bits = std::conditional_t<sizeof(T) == 2, uint16_t, std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>>;

// For each byte of a mask, its eight bits spread to eight all-ones or all-zeros
// elements: masking eight elements is one AND with a row of this table.
template <typename U>
struct ByteMasks {
  U lanes[256][8];
  ByteMasks() {
    for (int byte = 0; byte < 256; ++byte) {
      for (int bit = 0; bit < 8; ++bit) lanes[byte][bit] = (byte >> bit) & 1 ? static_cast<U>(~U{0}) : U{0};
    }
  }
};

// dst = src where the bit is set, else +0, for one row of `count` elements
// (dst may be src itself).
template <typename T>
void mask_row(const T* src, const uint8_t* bits, int64_t count, T* dst) {
  using U = Bits<T>;
  static_assert(sizeof(U) == sizeof(T), "an element and its bits differ in size");
  static const ByteMasks<U> table;
  const int64_t whole = count / 8;
  for (int64_t b = 0; b < whole; ++b) {
    const U* lanes = table.lanes[bits[b]];
    U v[8];  // copied through memcpy: the compiler makes it vector loads and stores
    std::memcpy(v, src + 8 * b, sizeof(v));
    for (int k = 0; k < 8; ++k) v[k] &= lanes[k];
    std::memcpy(dst + 8 * b, v, sizeof(v));
  }
  for (int64_t e = whole * 8; e < count; ++e) {
    U v;
    std::memcpy(&v, src + e, sizeof(v));
    v &= table.lanes[bits[whole]][e - whole * 8];
    std::memcpy(dst + e, &v, sizeof(v));
  }
}

void check_activation(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.dim() == 4, op, ": expected ", name, " of shape (N, C, H, W), got ", t.sizes());
  const auto dtype = t.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kBFloat16, op, ": expected ", name,
              " of dtype float32, float64 or bfloat16, got ", dtype);
  TORCH_CHECK(t.device().is_cpu(), op, ": expected ", name, " on the CPU, got ", t.device());
}

at::Tensor relu_mask(const at::Tensor& x) {
  check_activation("relu_mask", "x", x);
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  const int64_t row = w * c;
  const int64_t row_bytes = masks::row_bytes(row);
  at::Tensor bits = at::empty({n, h, row_bytes}, x.options().dtype(at::kByte));
  if (bits.numel() == 0) return bits;
  const at::Tensor xc = x.contiguous(at::MemoryFormat::ChannelsLast);
  uint8_t* dst = bits.data_ptr<uint8_t>();
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, xc.scalar_type(), "relu_mask", [&] {
    const scalar_t* src = xc.const_data_ptr<scalar_t>();
    at::parallel_for(0, n * h, grain_rows(row), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) masks::pack(src + r * row, row, dst + r * row_bytes);
    });
  });
  return bits;
}

at::Tensor apply_mask(const at::Tensor& grad, const at::Tensor& bits) {
  check_activation("apply_mask", "grad", grad);
  const int64_t n = grad.size(0), c = grad.size(1), h = grad.size(2), w = grad.size(3);
  const int64_t row = w * c;
  const int64_t row_bytes = masks::row_bytes(row);
  TORCH_CHECK(bits.scalar_type() == at::kByte, "apply_mask: expected uint8 bits from relu_mask, got ",
              bits.scalar_type());
  TORCH_CHECK(bits.dim() == 3 && bits.size(0) == n && bits.size(1) == h && bits.size(2) == row_bytes,
              "apply_mask: bits of shape ", bits.sizes(), " do not match grad of shape ", grad.sizes(),
              " (expected [", n, ", ", h, ", ", row_bytes, "])");
  TORCH_CHECK(bits.device().is_cpu(), "apply_mask: expected bits on the CPU, got ", bits.device());
  const at::Tensor gc = grad.contiguous(at::MemoryFormat::ChannelsLast);
  // A copy made just now is nobody else's: mask it in place.
  at::Tensor out = gc.is_same(grad) ? at::empty_like(gc, at::MemoryFormat::ChannelsLast) : gc;
  if (out.numel() == 0) return out;
  // Rows of the mask may be a slice of a larger one: address them by stride.
  const at::Tensor bc = bits.stride(2) == 1 ? bits : bits.contiguous();
  const uint8_t* mask = bc.const_data_ptr<uint8_t>();
  const int64_t stride_n = bc.stride(0), stride_h = bc.stride(1);
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, gc.scalar_type(), "apply_mask", [&] {
    const scalar_t* src = gc.const_data_ptr<scalar_t>();
    scalar_t* dst = out.data_ptr<scalar_t>();
    at::parallel_for(0, n * h, grain_rows(row), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const uint8_t* row_bits = mask + (r / h) * stride_n + (r % h) * stride_h;
        mask_row(src + r * row, row_bits, row, dst + r * row);
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(lama_fast, CPU, m) {
  m.impl("relu_mask", &relu_mask);
  m.impl("apply_mask", &apply_mask);
}

}  // namespace lama_fast
