// Argument checks and FFT norms shared by every implementation of the
// spectral ops (csrc/cpu/spectral.cpp, csrc/cuda/spectral_cuda.cpp and the
// CPU emulation of the CUDA pipeline), so that one bad argument gives the
// same message whichever device runs the op.
#pragma once

#include <ATen/ATen.h>
#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <sstream>
#include <string>
#include <utility>

namespace lama_fast {
namespace args {

enum class Norm { Ortho, Forward, Backward };

inline std::string dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return "torch.float32";
    case at::kDouble:
      return "torch.float64";
    case at::kBFloat16:
      return "torch.bfloat16";
    case at::kHalf:
      return "torch.float16";
    default:
      // Python's name (torch.int32, torch.complex64), not ATen's (Int, ComplexFloat).
      return "torch." + std::string(c10::getDtypeNames(t).first);
  }
}

inline std::string shape_str(c10::IntArrayRef sizes) {
  std::ostringstream out;
  out << sizes;
  return out.str();
}

inline Norm parse_norm(const char* op, c10::string_view norm) {
  if (norm == "ortho") return Norm::Ortho;
  if (norm == "forward") return Norm::Forward;
  if (norm == "backward") return Norm::Backward;
  TORCH_CHECK(false, op, ": fft_norm must be \"ortho\", \"forward\" or \"backward\", got \"", std::string(norm), "\"");
}

// (forward scale, inverse scale) of an unnormalised 2-D transform of H * W points.
inline std::pair<double, double> norm_scales(Norm norm, int64_t H, int64_t W) {
  const double points = static_cast<double>(H) * static_cast<double>(W);
  switch (norm) {
    case Norm::Ortho:
      return {1.0 / std::sqrt(points), 1.0 / std::sqrt(points)};
    case Norm::Forward:
      return {1.0 / points, 1.0};
    case Norm::Backward:
    default:
      return {1.0, 1.0 / points};
  }
}

// "a CPU tensor" / "a CUDA tensor".
inline std::string device_phrase(c10::DeviceType device) {
  return std::string("a ") + c10::DeviceTypeName(device, /*lower_case=*/false) + " tensor";
}

inline void check_tensor(const char* op, const char* name, const at::Tensor& t, const at::Tensor& x) {
  TORCH_CHECK(t.device().type() == x.device().type(), op, ": ", name, " must be ",
              device_phrase(x.device().type()), ", got one on ", t.device());
  TORCH_CHECK(t.device() == x.device(), op, ": ", name, " must be on the device of x (", x.device(), "), got ",
              t.device());
  TORCH_CHECK(t.layout() == at::kStrided, op, ": ", name, " must be a dense (strided) tensor, got layout ",
              t.layout());
  TORCH_CHECK(t.scalar_type() == x.scalar_type(), op, ": ", name, " must have the dtype of x (",
              dtype_name(x.scalar_type()), "), got ", dtype_name(t.scalar_type()));
}

inline void check_shape(const char* op, const char* name, const at::Tensor& t, c10::IntArrayRef expected,
                        const std::string& meaning) {
  TORCH_CHECK(t.sizes() == expected, op, ": ", name, " must have shape ", shape_str(expected), " (", meaning,
              "), got ", shape_str(t.sizes()));
}

// x on `device`, 4-D, in one of `dtypes` (`dtypes_text` names them for the message).
inline void check_x(const char* op, const at::Tensor& x, c10::DeviceType device,
                    std::initializer_list<at::ScalarType> dtypes, const char* dtypes_text) {
  TORCH_CHECK(x.device().type() == device, op, ": x must be ", device_phrase(device), ", got one on ", x.device());
  TORCH_CHECK(x.layout() == at::kStrided, op, ": x must be a dense (strided) tensor, got layout ", x.layout());
  TORCH_CHECK(x.dim() == 4, op, ": x must be a 4-D (N, C, H, W) tensor, got shape ", shape_str(x.sizes()));
  bool known = false;
  for (const auto d : dtypes) known = known || d == x.scalar_type();
  TORCH_CHECK(known, op, ": x must have dtype ", dtypes_text, ", got ", dtype_name(x.scalar_type()));
  TORCH_CHECK(x.size(1) >= 1 && x.size(2) >= 1 && x.size(3) >= 1, op,
              ": x must have at least one channel, row and column, got shape ", shape_str(x.sizes()));
}

struct Dims {
  int64_t N = 0, Cin = 0, C = 0, Cout = 0, H = 0, W = 0;
};

// The weights of spectral_transform, checked against x (already checked by check_x).
inline Dims check_spectral_transform(const char* op, const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1,
                                     const at::Tensor& w_freq, const at::Tensor& b_freq, const at::Tensor& w2,
                                     const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& other) {
  Dims d;
  d.N = x.size(0);
  d.Cin = x.size(1);
  d.H = x.size(2);
  d.W = x.size(3);
  check_tensor(op, "w1", w1, x);
  TORCH_CHECK(w1.dim() == 2 && w1.size(1) == d.Cin && w1.size(0) >= 1, op, ": w1 must have shape [Ch, ", d.Cin,
              "] (Ch, Cin where Cin = ", d.Cin, " channels of x), got ", shape_str(w1.sizes()));
  d.C = w1.size(0);
  const int64_t C = d.C;
  check_tensor(op, "b1", b1, x);
  check_shape(op, "b1", b1, {C}, "Ch where Ch = " + std::to_string(C) + " from w1");
  check_tensor(op, "w_freq", w_freq, x);
  check_shape(op, "w_freq", w_freq, {2 * C, 2 * C}, "2*Ch, 2*Ch where Ch = " + std::to_string(C) + " from w1");
  check_tensor(op, "b_freq", b_freq, x);
  check_shape(op, "b_freq", b_freq, {2 * C}, "2*Ch where Ch = " + std::to_string(C) + " from w1");
  check_tensor(op, "w2", w2, x);
  TORCH_CHECK(w2.dim() == 2 && w2.size(1) == C && w2.size(0) >= 1, op, ": w2 must have shape [Cout, ", C,
              "] (Cout, Ch where Ch = ", C, " from w1), got ", shape_str(w2.sizes()));
  d.Cout = w2.size(0);
  if (bias.has_value()) {
    check_tensor(op, "bias", *bias, x);
    check_shape(op, "bias", *bias, {d.Cout}, "Cout where Cout = " + std::to_string(d.Cout) + " from w2");
  }
  if (other.has_value()) {
    check_tensor(op, "other", *other, x);
    check_shape(op, "other", *other, {d.N, d.Cout, d.H, d.W}, "N, Cout, H, W of the output");
  }
  return d;
}

// The weights of fourier_unit, checked against x (already checked by check_x).
inline Dims check_fourier_unit(const char* op, const at::Tensor& x, const at::Tensor& w_freq,
                               const at::Tensor& b_freq) {
  Dims d;
  d.N = x.size(0);
  d.Cin = d.C = d.Cout = x.size(1);
  d.H = x.size(2);
  d.W = x.size(3);
  const int64_t C = d.C;
  check_tensor(op, "w_freq", w_freq, x);
  check_shape(op, "w_freq", w_freq, {2 * C, 2 * C}, "2*C, 2*C where C = " + std::to_string(C) + " channels of x");
  check_tensor(op, "b_freq", b_freq, x);
  check_shape(op, "b_freq", b_freq, {2 * C}, "2*C where C = " + std::to_string(C) + " channels of x");
  return d;
}

// Everything an implementation needs, checked: weights contiguous, x and
// `other` as given (undefined w1, b1, w2 for the Fourier unit alone).
struct SpectralArgs {
  at::Tensor x;
  at::Tensor w1, b1, w_freq, b_freq, w2;
  std::optional<at::Tensor> bias, other;
  bool relu = false;
  Norm norm = Norm::Ortho;
  Dims d;
};

// The op's arguments after check_x(op, x, ...) has passed.
inline SpectralArgs spectral_transform_args(const char* op, const at::Tensor& x, const at::Tensor& w1,
                                            const at::Tensor& b1, const at::Tensor& w_freq, const at::Tensor& b_freq,
                                            const at::Tensor& w2, const std::optional<at::Tensor>& bias,
                                            const std::optional<at::Tensor>& other, bool relu,
                                            c10::string_view fft_norm) {
  SpectralArgs a;
  a.d = check_spectral_transform(op, x, w1, b1, w_freq, b_freq, w2, bias, other);
  a.norm = parse_norm(op, fft_norm);
  a.x = x;
  a.w1 = w1.contiguous();
  a.b1 = b1.contiguous();
  a.w_freq = w_freq.contiguous();
  a.b_freq = b_freq.contiguous();
  a.w2 = w2.contiguous();
  if (bias.has_value()) a.bias = bias->contiguous();
  a.other = other;
  a.relu = relu;
  return a;
}

inline SpectralArgs fourier_unit_args(const char* op, const at::Tensor& x, const at::Tensor& w_freq,
                                      const at::Tensor& b_freq, c10::string_view fft_norm) {
  SpectralArgs a;
  a.d = check_fourier_unit(op, x, w_freq, b_freq);
  a.norm = parse_norm(op, fft_norm);
  a.x = x;
  a.w_freq = w_freq.contiguous();
  a.b_freq = b_freq.contiguous();
  return a;
}

}  // namespace args
}  // namespace lama_fast
