// nequip._kernels: importing it loads the runtime library, whose loading registers the message
// passing's CPU kernels with torch (message_passing.cpp) and settles oneMKL's vector-math
// kernels (vector_math.cpp).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "../src/vector_math.h"

namespace nequip {
int message_passing_kernels_version();  // message_passing.cpp
}

PYBIND11_MODULE(_kernels, module) {
  module.doc() = "Loads the CPU kernels of the message passing, registered as torch.ops.nequip.*";
  // A call into the runtime library, so that the linker keeps it as a dependency of this module
  // (with --as-needed it drops libraries whose symbols go unused): importing this module loads it.
  module.attr("kernel_version") = nequip::message_passing_kernels_version();
  module.attr("vector_math_functions") = nequip::detail::vector_math_functions();
}
