// Argument checks and FFT norms shared by every implementation of the
// spectral ops (csrc/cpu/spectral.cpp, csrc/cuda/spectral_cuda.cpp and the
// CPU emulation of the CUDA pipeline), so that one bad argument gives the
// same message whichever device runs the op; args::Entry, at the end, is the
// C++ signature of the ops that every implementation registers.
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

// Python's name of a dtype (torch.float32, torch.complex64), not ATen's (Float, ComplexFloat).
inline std::string dtype_name(at::ScalarType t) { return "torch." + std::string(c10::getDtypeNames(t).first); }

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

// The sizes of x (N, C, H, W), every channel count C.
inline Dims dims_of(const at::Tensor& x) {
  Dims d;
  d.N = x.size(0);
  d.Cin = d.C = d.Cout = x.size(1);
  d.H = x.size(2);
  d.W = x.size(3);
  return d;
}

// A weight of x's device and dtype, of shape `expected` (what `meaning` says).
inline void check_weight(const char* op, const char* name, const at::Tensor& t, const at::Tensor& x,
                         c10::IntArrayRef expected, const std::string& meaning) {
  check_tensor(op, name, t, x);
  check_shape(op, name, t, expected, meaning);
}

// A matrix of x's device and dtype with `columns` columns and at least one
// row, of shape [rows, columns] (what `meaning` says).
inline void check_matrix(const char* op, const char* name, const at::Tensor& t, const at::Tensor& x,
                         const char* rows, int64_t columns, const std::string& meaning) {
  check_tensor(op, name, t, x);
  TORCH_CHECK(t.dim() == 2 && t.size(1) == columns && t.size(0) >= 1, op, ": ", name, " must have shape [", rows,
              ", ", columns, "] (", meaning, "), got ", shape_str(t.sizes()));
}

// The weights of fourier_unit, checked against x (already checked by check_x).
inline Dims check_fourier_unit(const char* op, const at::Tensor& x, const at::Tensor& w_freq,
                               const at::Tensor& b_freq) {
  const Dims d = dims_of(x);
  const std::string C = std::to_string(d.C);
  check_weight(op, "w_freq", w_freq, x, {2 * d.C, 2 * d.C}, "2*C, 2*C where C = " + C + " channels of x");
  check_weight(op, "b_freq", b_freq, x, {2 * d.C}, "2*C where C = " + C + " channels of x");
  return d;
}

// Everything an implementation needs, checked: weights contiguous, x and
// `other` as given (undefined w1, b1, w2 for the Fourier unit alone).
struct SpectralArgs {
  at::Tensor x;
  at::Tensor w1, b1, w_freq, b_freq, w2;
  std::optional<at::Tensor> bias, other;
  bool relu = false;
  bool fourier_only = false;
  // spectral_transform_into (CPU): the output is accumulated into `other` itself.
  bool into_other = false;
  Norm norm = Norm::Ortho;
  Dims d;
};

// The arguments both ops take, checked: x, w_freq and b_freq (of sizes d), fft_norm.
inline SpectralArgs common_args(const char* op, const at::Tensor& x, const at::Tensor& w_freq,
                                const at::Tensor& b_freq, c10::string_view fft_norm, const Dims& d) {
  SpectralArgs a;
  a.d = d;
  a.norm = parse_norm(op, fft_norm);
  a.x = x;
  a.w_freq = w_freq.contiguous();
  a.b_freq = b_freq.contiguous();
  return a;
}

// The arguments of spectral_transform after check_x(op, x, ...) has passed.
inline SpectralArgs spectral_transform_args(const char* op, const at::Tensor& x, const at::Tensor& w1,
                                            const at::Tensor& b1, const at::Tensor& w_freq, const at::Tensor& b_freq,
                                            const at::Tensor& w2, const std::optional<at::Tensor>& bias,
                                            const std::optional<at::Tensor>& other, bool relu,
                                            c10::string_view fft_norm) {
  Dims d = dims_of(x);
  check_matrix(op, "w1", w1, x, "Ch", d.Cin, "Ch, Cin where Cin = " + std::to_string(d.Cin) + " channels of x");
  d.C = w1.size(0);
  const std::string Ch = std::to_string(d.C);
  check_weight(op, "b1", b1, x, {d.C}, "Ch where Ch = " + Ch + " from w1");
  check_weight(op, "w_freq", w_freq, x, {2 * d.C, 2 * d.C}, "2*Ch, 2*Ch where Ch = " + Ch + " from w1");
  check_weight(op, "b_freq", b_freq, x, {2 * d.C}, "2*Ch where Ch = " + Ch + " from w1");
  check_matrix(op, "w2", w2, x, "Cout", d.C, "Cout, Ch where Ch = " + Ch + " from w1");
  d.Cout = w2.size(0);
  if (bias.has_value()) {
    check_weight(op, "bias", *bias, x, {d.Cout}, "Cout where Cout = " + std::to_string(d.Cout) + " from w2");
  }
  if (other.has_value()) {
    check_weight(op, "other", *other, x, {d.N, d.Cout, d.H, d.W}, "N, Cout, H, W of the output");
  }
  SpectralArgs a = common_args(op, x, w_freq, b_freq, fft_norm, d);
  a.w1 = w1.contiguous();
  a.b1 = b1.contiguous();
  a.w2 = w2.contiguous();
  if (bias.has_value()) a.bias = bias->contiguous();
  a.other = other;
  a.relu = relu;
  return a;
}

// The arguments of fourier_unit after check_x(op, x, ...) has passed.
inline SpectralArgs fourier_unit_args(const char* op, const at::Tensor& x, const at::Tensor& w_freq,
                                      const at::Tensor& b_freq, c10::string_view fft_norm) {
  SpectralArgs a = common_args(op, x, w_freq, b_freq, fft_norm, check_fourier_unit(op, x, w_freq, b_freq));
  a.fourier_only = true;
  return a;
}

// The C++ functions registered for spectral_transform and fourier_unit (the
// schemas of csrc/cpu/module.cpp) by one implementation, which provides
//   kSpectralTransform, kFourierUnit   the ops' names in messages
//   check_x(op, x)                     its devices and dtypes (check_x above)
//   run(SpectralArgs)                  the op on checked arguments
// so that every implementation checks the same arguments in the same order.
template <class Impl>
struct Entry {
  static at::Tensor spectral_transform(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1,
                                       const at::Tensor& w_freq, const at::Tensor& b_freq, const at::Tensor& w2,
                                       const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& other,
                                       bool relu, c10::string_view fft_norm) {
    Impl::check_x(Impl::kSpectralTransform, x);
    return Impl::run(spectral_transform_args(Impl::kSpectralTransform, x, w1, b1, w_freq, b_freq, w2, bias, other,
                                             relu, fft_norm));
  }

  static at::Tensor fourier_unit(const at::Tensor& x, const at::Tensor& w_freq, const at::Tensor& b_freq,
                                 c10::string_view fft_norm) {
    Impl::check_x(Impl::kFourierUnit, x);
    return Impl::run(fourier_unit_args(Impl::kFourierUnit, x, w_freq, b_freq, fft_norm));
  }
};

}  // namespace args
}  // namespace lama_fast
