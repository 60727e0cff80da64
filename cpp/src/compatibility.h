// Whether a compiled file can run on this machine, with this torch, on the device asked
// for. Internal to the runtime (select_device, parse_device and cuda_device_count are
// public: nequip/runtime.h).
#pragma once

#include <c10/core/Device.h>

#include <string>
#include <vector>

#include "nequip/runtime.h"

namespace nequip::detail {

// The device the file at `path` (its `metadata`) runs on: `requested` as select_device
// places it (`local_rank`), available here, and of the type the file was compiled for.
// Throws DeviceError naming the file.
c10::Device model_device(const std::string& path, const Metadata& metadata,
                         const std::string& requested, int local_rank);

// Refuses a CPU package whose native code needs another machine or vector instructions this
// CPU lacks (DeviceError): loading it would crash the process (SIGILL) on the first call,
// not fail cleanly.
void check_cpu_isa(const std::string& path, const Metadata& metadata);

// The torch version that made a .pt2 against the running one: another major version is
// refused (ModelFileError), another minor version is reported in `warnings`.
void check_torch_version(const std::string& path, const Metadata& metadata,
                         std::vector<std::string>& warnings);

// Refuses a file that calls operators of NequIP's kernel library (metadata key
// nequip_operators, written by nequip-compile without --portable) that this runtime's library
// does not register (ModelFileError), before torch fails on them at load or first call. A file
// whose calls autograd differentiates at run time (TorchScript) needs their autograd kernels too.
void check_operators(const std::string& path, const Metadata& metadata, bool differentiated);

}  // namespace nequip::detail
