// Data layout ops of the fast CPU generator: each moves an activation once,
// straight into the buffer its consumer reads, instead of a chain of ATen
// copies (a padded copy took five copy_ calls and two flips; an upsampling
// layer's output one strided copy per phase).
//
// lama_fast::reflect_pad_into(x, out, left, right, top, bottom):
//   out = F.pad(x, (left, right, top, bottom), mode="reflect") for a
//   channels-last x (N, C, H, W) and a channels-last out
//   (N, C, H + top + bottom, W + left + right). Each padding
//   must be smaller than the side it reflects.
// lama_fast::interleave_phases_into(p00, p01, p10, p11, out, row0, col0):
//   out[:, :, 2 m + a, 2 j + b] = p_ab[:, :, m + a row0, j + b col0] for the
//   four channels-last phases (N, C, Hp, Wp) of a stride-2 upsampling and a
//   channels-last out (N, C, 2 H, 2 W). (row0 and col0 skip the
//   leading row and column that phases with two taps along an axis have
//   when their convolution zero-pads that axis on both sides.)
// lama_fast::reflect_pad_border(out, left, right, top, bottom): the border of
//   a channels-last out (N, C, H + top + bottom, W + left + right) filled by
//   reflecting its interior, in place: a layer that wrote its output into
//   that interior needs no padded copy.
// All take any dtype (bytes are moved) and run over rows in parallel; out of
// interleave_phases_into may also be a window of a channels-last tensor (the
// interior of a padded buffer). Schemas in csrc/cpu/module.cpp.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstdint>
#include <cstring>

namespace lama_fast {
namespace {

inline int64_t reflect(int64_t i, int64_t n) { return i < 0 ? -i : (i >= n ? 2 * (n - 1) - i : i); }

void check_channels_last(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.dim() == 4, op, ": expected ", name, " of shape (N, C, H, W), got ", t.sizes());
  TORCH_CHECK(t.is_contiguous(at::MemoryFormat::ChannelsLast) || t.numel() == 0, op, ": ", name,
              " must be channels_last contiguous");
}

void reflect_pad_into(const at::Tensor& x, const at::Tensor& out, int64_t left, int64_t right, int64_t top,
                            int64_t bottom) {
  const char* op = "reflect_pad_into";
  check_channels_last(x, op, "x");
  check_channels_last(out, op, "out");
  TORCH_CHECK(x.scalar_type() == out.scalar_type(), op, ": x is ", x.scalar_type(), " but out is ",
              out.scalar_type());
  TORCH_CHECK(left >= 0 && right >= 0 && top >= 0 && bottom >= 0, op, ": paddings must be >= 0, got (", left, ", ",
              right, ", ", top, ", ", bottom, ")");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(left < W && right < W && top < H && bottom < H, op,
              ": each padding must be smaller than the side it reflects, got (", left, ", ", right, ", ", top, ", ",
              bottom, ") for ", H, "x", W);
  const int64_t Ho = H + top + bottom, Wo = W + left + right;
  TORCH_CHECK(out.size(0) == N && out.size(1) == C && out.size(2) == Ho && out.size(3) == Wo, op,
              ": expected out of shape (", N, ", ", C, ", ", Ho, ", ", Wo, "), got ", out.sizes());
  TORCH_CHECK(x.device().is_cpu() && out.device().is_cpu(), op, ": expects CPU tensors");
  if (out.numel() == 0) return;
  const int64_t item = static_cast<int64_t>(x.element_size());
  const int64_t pixel = C * item;
  const char* src = static_cast<const char*>(x.data_ptr());
  char* dst = static_cast<char*>(out.data_ptr());
  at::parallel_for(0, N * Ho, 8, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / Ho;
      const int64_t y = reflect(r - n * Ho - top, H);
      const char* row = src + (n * H + y) * W * pixel;
      char* o = dst + r * Wo * pixel;
      for (int64_t j = 0; j < left; ++j) std::memcpy(o + j * pixel, row + (left - j) * pixel, pixel);
      std::memcpy(o + left * pixel, row, W * pixel);
      for (int64_t j = 0; j < right; ++j) {
        std::memcpy(o + (left + W + j) * pixel, row + (W - 2 - j) * pixel, pixel);
      }
    }
  });
}

// Whether t (N, C, H, W) holds each pixel's C channels side by side and
// each row's pixels one after another (a channels-last tensor, or a window
// of one such as the interior of a padded buffer).
bool rows_of_pixels(const at::Tensor& t) {
  return t.dim() == 4 && (t.size(1) <= 1 || t.stride(1) == 1) && (t.size(3) <= 1 || t.stride(3) == t.size(1));
}

void interleave_phases_into(const at::Tensor& p00, const at::Tensor& p01, const at::Tensor& p10,
                            const at::Tensor& p11, const at::Tensor& out, int64_t row0, int64_t col0) {
  const char* op = "interleave_phases_into";
  const at::Tensor* phases[4] = {&p00, &p01, &p10, &p11};
  TORCH_CHECK(out.dim() == 4, op, ": expected out of shape (N, C, H, W), got ", out.sizes());
  TORCH_CHECK(rows_of_pixels(out) || out.numel() == 0, op,
              ": out must be channels_last (or a window of a channels_last tensor)");
  const int64_t N = out.size(0), C = out.size(1), Ho = out.size(2), Wo = out.size(3);
  TORCH_CHECK(Ho % 2 == 0 && Wo % 2 == 0, op, ": out must have an even height and width, got ", out.sizes());
  TORCH_CHECK(row0 >= 0 && col0 >= 0, op, ": row0 and col0 must be >= 0, got ", row0, ", ", col0);
  const int64_t H = Ho / 2, W = Wo / 2;
  for (const at::Tensor* const* it = phases; it != phases + 4; ++it) {
    const at::Tensor* p = *it;
    check_channels_last(*p, op, "each phase");
    TORCH_CHECK(p->scalar_type() == out.scalar_type(), op, ": a phase is ", p->scalar_type(), " but out is ",
                out.scalar_type());
    const int64_t a = (it - phases) / 2, b = (it - phases) % 2;
    TORCH_CHECK(p->size(0) == N && p->size(1) == C && p->size(2) >= H + a * row0 && p->size(3) >= W + b * col0, op,
                ": phase (", a, ", ", b, ") of shape ", p->sizes(), " does not cover ", H, "x", W, " from (",
                a * row0, ", ", b * col0, ") for out ", out.sizes());
    TORCH_CHECK(p->device().is_cpu(), op, ": expects CPU tensors");
  }
  TORCH_CHECK(out.device().is_cpu(), op, ": expects CPU tensors");
  if (out.numel() == 0) return;
  const int64_t item = static_cast<int64_t>(out.element_size());
  const int64_t pixel = C * item;
  char* dst = static_cast<char*>(out.data_ptr());
  at::parallel_for(0, N * Ho, 8, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / Ho;
      const int64_t y = r - n * Ho;
      const int64_t a = y & 1, m = y >> 1;
      char* o = dst + (n * out.stride(0) + y * out.stride(2)) * item;
      for (int64_t b = 0; b < 2; ++b) {
        const at::Tensor& p = *phases[2 * a + b];
        const int64_t hp = p.size(2), wp = p.size(3);
        const char* row =
            static_cast<const char*>(p.data_ptr()) + ((n * hp + m + a * row0) * wp + b * col0) * pixel;
        for (int64_t j = 0; j < W; ++j) std::memcpy(o + (2 * j + b) * pixel, row + j * pixel, pixel);
      }
    }
  });
}

void reflect_pad_border(const at::Tensor& out, int64_t left, int64_t right, int64_t top, int64_t bottom) {
  const char* op = "reflect_pad_border";
  check_channels_last(out, op, "out");
  TORCH_CHECK(left >= 0 && right >= 0 && top >= 0 && bottom >= 0, op, ": paddings must be >= 0, got (", left, ", ",
              right, ", ", top, ", ", bottom, ")");
  const int64_t N = out.size(0), C = out.size(1), Ho = out.size(2), Wo = out.size(3);
  const int64_t H = Ho - top - bottom, W = Wo - left - right;
  TORCH_CHECK(H > 0 && W > 0 && left < W && right < W && top < H && bottom < H, op,
              ": each padding must be smaller than the side it reflects, got (", left, ", ", right, ", ", top, ", ",
              bottom, ") around ", H, "x", W, " in ", out.sizes());
  TORCH_CHECK(out.device().is_cpu(), op, ": expects a CPU tensor");
  if (out.numel() == 0) return;
  const int64_t pixel = C * static_cast<int64_t>(out.element_size());
  char* base = static_cast<char*>(out.data_ptr());
  // The left and right columns of the interior rows, then whole top and bottom rows.
  at::parallel_for(0, N * H, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / H;
      char* row = base + ((n * Ho + top + r - n * H) * Wo) * pixel;
      for (int64_t j = 0; j < left; ++j) std::memcpy(row + j * pixel, row + (2 * left - j) * pixel, pixel);
      for (int64_t j = 0; j < right; ++j) {
        std::memcpy(row + (left + W + j) * pixel, row + (left + W - 2 - j) * pixel, pixel);
      }
    }
  });
  at::parallel_for(0, N * (top + bottom), 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / (top + bottom);
      const int64_t k = r - n * (top + bottom);
      const int64_t y = k < top ? k : top + H + (k - top);  // the border row
      const int64_t from = k < top ? 2 * top - y : 2 * (top + H - 1) - y;
      std::memcpy(base + (n * Ho + y) * Wo * pixel, base + (n * Ho + from) * Wo * pixel, Wo * pixel);
    }
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(lama_fast, CPU, m) {
  m.impl("reflect_pad_border", &reflect_pad_border);
  m.impl("reflect_pad_into", &reflect_pad_into);
  m.impl("interleave_phases_into", &interleave_phases_into);
}

}  // namespace lama_fast
