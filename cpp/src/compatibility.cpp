#include "compatibility.h"

#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/cpu/Utils.h>
#include <c10/util/Exception.h>
#include <sys/utsname.h>
#include <torch/cuda.h>
#include <torch/headeronly/version.h>

#include <algorithm>
#include <optional>
#include <sstream>
#include <unordered_map>

#include "text.h"

namespace nequip {
namespace {

// `name` as a device of a type the runtime runs on, its availability not yet checked.
c10::Device device_from_name(const std::string& name) {
  std::optional<c10::Device> device;
  try {
    device.emplace(name);
  } catch (const c10::Error&) {
  }
  if (!device || !(device->is_cpu() || device->is_cuda()) ||
      (device->is_cpu() && device->has_index())) {
    throw DeviceError("invalid device '" + name + "': expected 'cpu', 'cuda' or 'cuda:<index>'");
  }
  return *device;
}

// `name` as a device of this machine ("cuda" is "cuda:0").
c10::Device available_device(const std::string& name) {
  c10::Device device = device_from_name(name);
  if (device.is_cuda()) {
    if (!torch::cuda::is_available()) {
      throw DeviceError("device '" + name +
                        "' requested, but CUDA is not available to torch: use device 'cpu', or "
                        "a CUDA build of torch on a machine with a GPU");
    }
    if (!device.has_index()) device.set_index(0);
    const int count = cuda_device_count();
    if (device.index() >= count) {
      throw DeviceError("device '" + name + "' requested, but only " + std::to_string(count) +
                        " CUDA device(s) are visible: use one of them, or device 'cpu'");
    }
  }
  return device;
}

constexpr const char* kAotiMachineKey = "AOTI_MACHINE";    // written by torch: uname -m
constexpr const char* kAotiCpuIsaKey = "AOTI_CPU_ISA";     // torch's vector ISA, e.g. "AVX512"
constexpr const char* kTorchVersionKey = "torch_version";  // ours, written by nequip-compile
constexpr const char* kOperatorsKey = "nequip_operators";  // ours, written by nequip-compile

// The words of AOTI_CPU_ISA on x86 (torch's inductor names) and the CPU features each needs
// (the compiler flags torch builds the kernels with; names of at::cpu::get_cpu_capabilities).
struct VectorIsa {
  const char* name;
  std::vector<const char*> features;
};
const std::vector<VectorIsa> kX86VectorIsas = {
    {"AVX2", {"avx2", "fma3"}},
    {"AVX512", {"avx512_f", "avx512_dq", "avx512_vl", "avx512_bw", "fma3"}},
    {"AVX512_VNNI", {"avx512_vnni"}},
    {"AMX_TILE", {"amx_tile", "amx_bf16", "amx_int8"}},
};

std::string this_machine() {
  struct utsname name;
  return uname(&name) == 0 ? name.machine : "";
}

}  // namespace

std::string parse_device(const std::string& name, bool on_this_machine) {
  return on_this_machine ? available_device(name).str() : device_from_name(name).str();
}

std::string select_device(const std::string& requested, const std::string& compiled_for,
                          int local_rank, int num_cuda_devices) {
  const std::string name =
      !requested.empty() ? requested : (compiled_for.empty() ? "cpu" : compiled_for);
  const c10::Device device = device_from_name(name);
  if (!device.is_cuda() || device.has_index()) return name;
  if (num_cuda_devices < 1) {
    throw DeviceError(
        "device 'cuda' requested but no CUDA device is visible to torch: use device 'cpu' (and "
        "a model compiled for it), or a CUDA build of torch on a machine with a GPU");
  }
  return "cuda:" + std::to_string(std::max(local_rank, 0) % num_cuda_devices);
}

int cuda_device_count() {
  return torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0;
}

void set_num_threads(int num_threads) {
  if (num_threads < 1) {
    throw InputError("the number of threads must be at least 1, got " +
                     std::to_string(num_threads));
  }
  at::set_num_threads(num_threads);
}

namespace detail {

c10::Device model_device(const std::string& path, const Metadata& metadata,
                         const std::string& requested, int local_rank) {
  c10::Device device = c10::kCPU;
  try {
    device = available_device(
        select_device(requested, metadata.compiled_for, local_rank, cuda_device_count()));
  } catch (const DeviceError& error) {
    throw DeviceError(path + ": " + error.what());
  }
  const std::string device_type = c10::DeviceTypeName(device.type(), /*lower_case=*/true);
  if (!metadata.compiled_for.empty() && metadata.compiled_for != device_type) {
    throw DeviceError(path + ": compiled for device '" + metadata.compiled_for +
                      "', cannot run on device '" + device.str() + "'; compile it again for '" +
                      device_type + "' (nequip-compile ... --device " + device_type + ")");
  }
  return device;
}

void check_cpu_isa(const std::string& path, const Metadata& metadata) {
  const std::string machine = this_machine();
  auto compiled_machine = metadata.raw.find(kAotiMachineKey);
  if (compiled_machine != metadata.raw.end() && !machine.empty() &&
      compiled_machine->second != machine) {
    throw DeviceError(path + ": compiled for " + compiled_machine->second +
                      " machines (metadata key " + kAotiMachineKey + "), this one is " + machine +
                      "; compile it again on this machine");
  }
  auto compiled_isa = metadata.raw.find(kAotiCpuIsaKey);
  // Only x86 ISAs are known here; on other machines the machine check is all there is.
  if (compiled_isa == metadata.raw.end() || machine != "x86_64") return;

  const std::unordered_map<std::string, c10::IValue> capabilities = at::cpu::get_cpu_capabilities();
  auto has = [&](const VectorIsa& isa) {
    return std::all_of(isa.features.begin(), isa.features.end(), [&](const char* feature) {
      auto it = capabilities.find(feature);
      return it != capabilities.end() && it->second.isBool() && it->second.toBool();
    });
  };
  // An ISA the runtime does not know is one it cannot vouch for: refused.
  std::vector<std::string> lacking;
  for (const std::string& word : split_words(compiled_isa->second)) {
    if (word == "INVALID_VEC_ISA") continue;  // torch's name for "no vector instructions"
    auto isa = std::find_if(kX86VectorIsas.begin(), kX86VectorIsas.end(),
                            [&](const VectorIsa& known) { return word == known.name; });
    if (isa == kX86VectorIsas.end() || !has(*isa)) lacking.push_back(word);
  }
  if (lacking.empty()) return;
  std::vector<std::string> offered;
  for (const VectorIsa& isa : kX86VectorIsas) {
    if (has(isa)) offered.push_back(isa.name);
  }
  const bool has_avx2 = has(kX86VectorIsas[0]);
  throw DeviceError(path + ": compiled for CPUs with " + compiled_isa->second + " (metadata key " +
                    kAotiCpuIsaKey + "), but this CPU lacks " + join(lacking) + " (it offers " +
                    (offered.empty() ? std::string("none of AVX2 AVX512") : join(offered)) +
                    "): its native code cannot run here; compile it again on this machine, or with "
                    "ATEN_CPU_CAPABILITY=" +
                    (has_avx2 ? "avx2" : "default") + " set for nequip-compile");
}

// The runtime is built against the torch that runs it; a .pt2's native code calls libtorch.
// Files of other producers lack the key.
void check_torch_version(const std::string& path, const Metadata& metadata,
                         std::vector<std::string>& warnings) {
  auto stored = metadata.raw.find(kTorchVersionKey);
  if (stored == metadata.raw.end()) return;
  const std::string running = std::to_string(TORCH_VERSION_MAJOR) + "." +
                              std::to_string(TORCH_VERSION_MINOR) + "." +
                              std::to_string(TORCH_VERSION_PATCH);
  long long major = -1, minor = -1;
  char dot = 0;
  std::istringstream stream(stored->second);
  if (!(stream >> major >> dot >> minor) || dot != '.' || major < 0 || minor < 0) {
    throw ModelFileError(path + ": metadata key '" + kTorchVersionKey +
                         "' is malformed: expected a torch version such as '" + running +
                         "', got '" + printable(stored->second) + "'");
  }
  const std::string made_with = path + ": made with torch " + stored->second + " (metadata key " +
                                kTorchVersionKey + "), this runtime uses torch " + running;
  if (major != TORCH_VERSION_MAJOR) {
    throw ModelFileError(made_with +
                         ": an AOTInductor package of another major version of torch "
                         "cannot run here; compile it again with torch " +
                         running);
  }
  if (minor != TORCH_VERSION_MINOR) {
    warnings.push_back(made_with +
                       ": AOTInductor packages are not guaranteed to work across "
                       "torch versions; if results look wrong, compile it again "
                       "with torch " +
                       running);
  }
}

void check_operators(const std::string& path, const Metadata& metadata, bool differentiated) {
  auto listed = metadata.raw.find(kOperatorsKey);
  if (listed == metadata.raw.end()) return;
  std::vector<std::string> missing;
  for (const std::string& name : split_words(listed->second)) {
    if (name.rfind("nequip::", 0) != 0 || name.size() == 8) {
      throw ModelFileError(path + ": metadata key '" + kOperatorsKey +
                           "' is malformed: expected operator names such as "
                           "'nequip::message_forward_v1', got '" +
                           printable(listed->second) + "'");
    }
    auto handle = c10::Dispatcher::singleton().findSchema({name, ""});
    if (!handle.has_value() || !handle->hasKernelForDispatchKey(c10::DispatchKey::CPU) ||
        (differentiated && !handle->hasKernelForDispatchKey(c10::DispatchKey::Autograd))) {
      missing.push_back(name);
    }
  }
  if (!missing.empty()) {
    throw ModelFileError(path + ": calls " + join(missing) + " (metadata key " + kOperatorsKey +
                         "), which this NequIP runtime does not provide: the file was made by "
                         "a newer NequIP; run it with that version, or compile it again with "
                         "nequip-compile --portable (a file any NequIP runtime can run)");
  }
}

}  // namespace detail
}  // namespace nequip
