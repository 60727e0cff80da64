// torch computes some float functions of contiguous CPU tensors (sin, sqrt, exp, ... : the
// IMPLEMENT_VML_MKL list of ATen/cpu/vml.h) with oneMKL's vector math (VML), each intra-op
// thread on its chunk of the tensor. oneMKL 2024.2, which torch 2.13's wheels carry, chooses a
// VML function's kernel at that function's first call in the process; when the first call runs
// on several threads at once, one thread can compute its whole chunk with a low-accuracy kernel
// (pytorch/pytorch#188792). Seen here: the Bessel basis of a model's first call after a fresh
// start, on 2 threads, had the second thread's half of the edges 2.7e-5 off (float32, the
// correct result 2.2e-7 off), so the first energies of about one process in eight were 1.3e-5
// eV off per atom; a float64 model was 1.4e-10 off. Later calls were right.
//
// So when this library loads (every process that runs a model through it: Python, ASE,
// nequip-test, the LAMMPS plugin), each of those functions is called once, in float32 and
// float64, on one thread (a few elements, below torch's grain size), before any model call can
// run it on several.
#include "vector_math.h"

#include <ATen/ATen.h>

namespace nequip::detail {

const std::vector<std::string>& vector_math_functions() {
  static const std::vector<std::string> names = {"acos",   "asin", "atan", "cos",   "erf",  "erfc",
                                                 "erfinv", "exp",  "log",  "log10", "log2", "sin",
                                                 "sqrt",   "tan",  "tanh", "trunc"};
  return names;
}

namespace {

at::Tensor apply(const std::string& name, const at::Tensor& x) {
  if (name == "acos") return at::acos(x);
  if (name == "asin") return at::asin(x);
  if (name == "atan") return at::atan(x);
  if (name == "cos") return at::cos(x);
  if (name == "erf") return at::erf(x);
  if (name == "erfc") return at::erfc(x);
  if (name == "erfinv") return at::erfinv(x);
  if (name == "exp") return at::exp(x);
  if (name == "log") return at::log(x);
  if (name == "log10") return at::log10(x);
  if (name == "log2") return at::log2(x);
  if (name == "sin") return at::sin(x);
  if (name == "sqrt") return at::sqrt(x);
  if (name == "tan") return at::tan(x);
  if (name == "tanh") return at::tanh(x);
  if (name == "trunc") return at::trunc(x);
  throw std::logic_error("no vector math function '" + name + "'");
}

}  // namespace

void settle_vector_math_kernels() {
  for (const at::ScalarType dtype : {at::kFloat, at::kDouble}) {
    // in every function's domain (erfinv, acos and asin: |x| < 1; log: x > 0)
    const at::Tensor x = at::full({8}, 0.5, at::TensorOptions(dtype));
    for (const std::string& name : vector_math_functions()) apply(name, x);
  }
}

namespace {

// Runs when the library loads; libtorch, which it links, has loaded (and registered its
// operators) before.
const bool settled_at_load = [] {
  try {
    settle_vector_math_kernels();
  } catch (...) {
    // nothing to report to at load; torch's own first calls then run as they would without us
  }
  return true;
}();

}  // namespace
}  // namespace nequip::detail
