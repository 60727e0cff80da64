// nequip._kernels: importing it loads the runtime library, whose loading registers the message
// passing's CPU kernels with torch (message_passing.cpp). It has nothing else.
#include <pybind11/pybind11.h>

PYBIND11_MODULE(_kernels, module) {
  module.doc() = "Loads the CPU kernels of the message passing, registered as torch.ops.nequip.*";
}
