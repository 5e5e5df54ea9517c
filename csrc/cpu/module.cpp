// The Python module lama_fast._C. Importing it runs the static registrations
// (TORCH_LIBRARY_FRAGMENT / TORCH_LIBRARY_IMPL) of every csrc/cpu/*.cpp, which
// makes the ops available as torch.ops.lama_fast.<name>.

#include <pybind11/pybind11.h>

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Compiled CPU ops of lama_fast, registered under torch.ops.lama_fast";
}
