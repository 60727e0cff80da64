#include "nequip/runtime.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/Utils.h>
#include <c10/util/Exception.h>
#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/cuda.h>
#include <torch/headeronly/version.h>
#include <torch/script.h>
#include <sys/utsname.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <optional>
#include <sstream>
#include <string_view>
#include <utility>

#include "call_memory.h"
#include "metadata.h"

namespace nequip {
namespace {

// Three significant digits: enough for distances in messages ("0", "0.4", "1.23e-05").
std::string short_number(double value) {
  std::ostringstream stream;
  stream.precision(3);
  stream << value;
  return stream.str();
}

std::string non_finite_message(const std::string& path, double r_max,
                               const std::optional<NonFiniteOutputError::ClosestPair>& closest,
                               bool overlap, const std::string& pair) {
  const std::string what = path + ": the model gave a non-finite energy or forces (NaN or infinity)";
  const std::string threshold = short_number(NonFiniteOutputError::kOverlapFraction) +
                                " * r_max = " +
                                short_number(NonFiniteOutputError::kOverlapFraction * r_max) +
                                " Å";
  if (overlap) {
    return what + ": " + pair + " are " + short_number(closest->distance) +
           " Å apart (closer than " + threshold +
           "); overlapping atoms are the likely cause: check the structure";
  }
  const std::string closest_text =
      closest ? "the closest two atoms are " + short_number(closest->distance) + " Å apart"
              : "no two atoms are within the cutoff";
  return what + " for finite inputs (" + closest_text +
         "); its weights may be non-finite: check the file";
}

std::string default_pair(const std::optional<NonFiniteOutputError::ClosestPair>& closest) {
  return closest ? "atoms " + std::to_string(closest->first) + " and " +
                       std::to_string(closest->second)
                 : std::string();
}

// Field names of FILE_CONTRACT §1 that cross the runtime's boundary.
constexpr const char* kPos = "pos";
constexpr const char* kEdgeIndex = "edge_index";
constexpr const char* kAtomTypes = "atom_types";
constexpr const char* kCell = "cell";
constexpr const char* kEdgeCellShift = "edge_cell_shift";
constexpr const char* kLocalMask = "local_mask";
constexpr const char* kAtomicEnergy = "atomic_energy";
constexpr const char* kTotalEnergy = "total_energy";
constexpr const char* kForces = "forces";
constexpr const char* kStress = "stress";
constexpr const char* kVirial = "virial";
constexpr const char* kAtomVirial = "atom_virial";

// FILE_CONTRACT §3-4: the inputs every model takes (the defaults of files whose metadata
// does not list them), and the outputs of AOTI files whose metadata lacks
// `nequip_aoti_outputs` (the `pair_nequip` order of older producers).
const std::vector<std::string> kRequiredInputs = {kPos, kEdgeIndex, kAtomTypes, kCell,
                                                  kEdgeCellShift};
const std::vector<std::string> kAotiDefaultOutputs = {kAtomicEnergy, kForces, kVirial};
// FILE_CONTRACT §3: what every TorchScript model returns.
const std::vector<std::string> kTorchScriptOutputs = {kAtomicEnergy, kTotalEnergy, kForces,
                                                      kStress, kVirial};
// Every field the runtime knows: the required inputs plus this project's local_mask (target
// `pair_nequip_domain`, our TorchScript files); §3's outputs plus our atom_virial.
const std::vector<std::string> kKnownInputs = {kPos, kEdgeIndex, kAtomTypes, kCell,
                                               kEdgeCellShift, kLocalMask};
const std::vector<std::string> kKnownOutputs = {kAtomicEnergy, kTotalEnergy, kForces,
                                                kStress, kVirial, kAtomVirial};
const std::vector<std::string> kRequiredOutputs = {kAtomicEnergy, kForces};

constexpr const char* kAotiDeviceKey = "AOTI_DEVICE_KEY";  // written by torch

bool ends_with(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string join(const std::vector<std::string>& words, const char* separator = " ") {
  std::string joined;
  for (size_t i = 0; i < words.size(); ++i) joined += (i ? separator : "") + words[i];
  return joined;
}

std::string shape_string(const at::Tensor& tensor) {
  std::ostringstream stream;
  stream << "(";
  for (int64_t d = 0; d < tensor.dim(); ++d) stream << (d ? ", " : "") << tensor.size(d);
  stream << (tensor.dim() == 1 ? ",)" : ")");
  return stream.str();
}

// Runs `body`, turning anything torch throws into a TorchError that says what was being done.
template <typename Body>
auto translate_torch_errors(const std::string& context, Body&& body) -> decltype(body()) {
  try {
    return body();
  } catch (const Error&) {
    throw;
  } catch (const c10::Error& error) {
    throw TorchError(context + ": " + error.what_without_backtrace());
  } catch (const std::exception& error) {
    throw TorchError(context + ": " + error.what());
  }
}

// ---------------------------------------------------------------------------------------
// Opening the file

ModelFormat format_from_extension(const std::string& path) {
  if (ends_with(path, ".pth")) return ModelFormat::TorchScript;
  if (ends_with(path, ".pt2")) return ModelFormat::AOTInductor;
  throw ModelFileError(path +
                       ": unknown model file extension: expected .nequip.pth (TorchScript) "
                       "or .nequip.pt2 (AOTInductor)");
}

const char* format_description(ModelFormat format) {
  return format == ModelFormat::TorchScript ? "a TorchScript archive (.nequip.pth)"
                                            : "an AOTInductor package (.nequip.pt2)";
}

// What the zip archive holds: its format by content, and (TorchScript) its extra files.
struct ArchiveContents {
  std::optional<ModelFormat> format;
  std::map<std::string, std::string> extra_files;
};

ArchiveContents read_archive(const std::string& path) {
  const std::string not_a_model =
      path + ": not a compiled NequIP model (neither a TorchScript archive nor an "
             "AOTInductor package)";
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> reader;
  try {
    reader = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
  } catch (const c10::Error&) {
    throw ModelFileError(not_a_model);
  }
  return translate_torch_errors(path + ": reading the archive", [&] {
    ArchiveContents contents;
    bool has_code = false;
    bool has_aoti_model = false;
    const std::string extra_prefix = "extra/";
    for (const std::string& record : reader->getAllRecords()) {
      if (record.rfind("code/", 0) == 0) has_code = true;
      if (record.rfind("data/aotinductor/", 0) == 0) has_aoti_model = true;
      if (record.rfind(extra_prefix, 0) == 0 && record.size() > extra_prefix.size()) {
        auto [data, size] = reader->getRecord(record);
        contents.extra_files[record.substr(extra_prefix.size())] =
            std::string(static_cast<const char*>(data.get()), size);
      }
    }
    if (has_code && reader->hasRecord("data.pkl") && reader->hasRecord("constants.pkl")) {
      contents.format = ModelFormat::TorchScript;
    } else if (has_aoti_model && reader->hasRecord("archive_format")) {
      contents.format = ModelFormat::AOTInductor;
    } else {
      throw ModelFileError(not_a_model);
    }
    return contents;
  });
}

// `name` as a device of a type the runtime runs on, its availability not yet checked.
c10::Device device_from_name(const std::string& name) {
  std::optional<c10::Device> device;
  try {
    device.emplace(name);
  } catch (const c10::Error&) {
  }
  if (!device || !(device->is_cpu() || device->is_cuda()) || (device->is_cpu() && device->has_index())) {
    throw DeviceError("invalid device '" + name + "': expected 'cpu', 'cuda' or 'cuda:<index>'");
  }
  return *device;
}

c10::Device parse_device(const std::string& name) {
  std::optional<c10::Device> device = device_from_name(name);
  if (device->is_cuda()) {
    if (!torch::cuda::is_available()) {
      throw DeviceError("device '" + name + "' requested but CUDA is not available to torch: "
                        "use device 'cpu', or a CUDA build of torch on a machine with a GPU");
    }
    if (!device->has_index()) device->set_index(0);
    const int count = torch::cuda::device_count();
    if (device->index() >= count) {
      throw DeviceError("device '" + name + "' requested but only " + std::to_string(count) +
                        " CUDA device(s) are visible");
    }
  }
  return *device;
}

// The input / output field names stored under `key`, checked against those the runtime knows.
std::vector<std::string> model_fields(const Metadata& metadata, const std::string& path,
                                     const std::string& key,
                                     const std::vector<std::string>& default_fields,
                                     const std::vector<std::string>& known,
                                     const std::vector<std::string>& required) {
  auto it = metadata.raw.find(key);
  if (it == metadata.raw.end()) return default_fields;
  std::vector<std::string> fields = detail::split_words(it->second);
  auto malformed = [&] {
    return ModelFileError(path + ": metadata key '" + key +
                          "' is malformed: expected distinct names from '" + join(known) +
                          "' including '" + join(required) + "', got '" + it->second + "'");
  };
  for (size_t i = 0; i < fields.size(); ++i) {
    if (std::find(known.begin(), known.end(), fields[i]) == known.end()) throw malformed();
    if (std::find(fields.begin(), fields.begin() + i, fields[i]) != fields.begin() + i) {
      throw malformed();
    }
  }
  for (const std::string& name : required) {
    if (std::find(fields.begin(), fields.end(), name) == fields.end()) throw malformed();
  }
  return fields;
}

// ---------------------------------------------------------------------------------------
// What a .pt2 needs of the machine: its native code runs as is

constexpr const char* kAotiMachineKey = "AOTI_MACHINE";  // written by torch: uname -m
constexpr const char* kAotiCpuIsaKey = "AOTI_CPU_ISA";   // torch's vector ISA, e.g. "AVX512"
constexpr const char* kTorchVersionKey = "torch_version";  // ours, written by nequip-compile

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

// Refuses a CPU package whose native code needs another machine or vector instructions this
// CPU lacks: loading it would crash the process (SIGILL) on the first call, not fail cleanly.
void check_cpu_isa(const std::string& path, const Metadata& metadata) {
  const std::string machine = this_machine();
  auto compiled_machine = metadata.raw.find(kAotiMachineKey);
  if (compiled_machine != metadata.raw.end() && !machine.empty() &&
      compiled_machine->second != machine) {
    throw DeviceError(path + ": compiled for " + compiled_machine->second +
                      " machines (metadata key " + kAotiMachineKey + "), this one is " +
                      machine + "; compile it again on this machine");
  }
  auto compiled_isa = metadata.raw.find(kAotiCpuIsaKey);
  // Only x86 ISAs are known here; on other machines the machine check is all there is.
  if (compiled_isa == metadata.raw.end() || machine != "x86_64") return;

  const std::unordered_map<std::string, c10::IValue> capabilities =
      at::cpu::get_cpu_capabilities();
  auto has = [&](const VectorIsa& isa) {
    return std::all_of(isa.features.begin(), isa.features.end(), [&](const char* feature) {
      auto it = capabilities.find(feature);
      return it != capabilities.end() && it->second.isBool() && it->second.toBool();
    });
  };
  std::vector<std::string> lacking;
  for (const std::string& word : detail::split_words(compiled_isa->second)) {
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
  throw DeviceError(
      path + ": compiled for CPUs with " + compiled_isa->second + " (metadata key " +
      kAotiCpuIsaKey + "), but this CPU lacks " + join(lacking) + " (it offers " +
      (offered.empty() ? std::string("none of AVX2 AVX512") : join(offered)) +
      "): its native code cannot run here; compile it again on this machine, or with "
      "ATEN_CPU_CAPABILITY=" + (has_avx2 ? "avx2" : "default") + " set for nequip-compile");
}

// The torch version that made a .pt2 against the running one (the runtime is built against
// the torch that runs it). Its native code calls libtorch: another major version is refused,
// another minor version is reported in `warnings`. Files of other producers lack the key.
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
                         "', got '" + detail::printable(stored->second) + "'");
  }
  const std::string made_with = path + ": made with torch " + stored->second +
                                " (metadata key " + kTorchVersionKey + "), this runtime uses torch " +
                                running;
  if (major != TORCH_VERSION_MAJOR) {
    throw ModelFileError(made_with + ": an AOTInductor package of another major version of torch "
                                     "cannot run here; compile it again with torch " +
                         running);
  }
  if (minor != TORCH_VERSION_MINOR) {
    warnings.push_back(made_with + ": AOTInductor packages are not guaranteed to work across "
                                   "torch versions; if results look wrong, compile it again "
                                   "with torch " + running);
  }
}

// ---------------------------------------------------------------------------------------
// Inputs

// Converted inputs, exactly as the compiled models need them (FILE_CONTRACT §1, §4).
struct PreparedInputs {
  at::Tensor pos;              // (N, 3) float64
  at::Tensor edge_index;       // (2, E) int64
  at::Tensor atom_types;       // (N,) int64
  at::Tensor cell;             // (1, 3, 3) float64
  at::Tensor edge_cell_shift;  // (E, 3) float64
  at::Tensor local_mask;       // (N,) bool, only for models taking it
  double volume = 0.0;         // |det(cell)|

  const at::Tensor& get(const std::string& name) const {
    if (name == kPos) return pos;
    if (name == kEdgeIndex) return edge_index;
    if (name == kAtomTypes) return atom_types;
    if (name == kCell) return cell;
    if (name == kLocalMask) return local_mask;
    if (name == kEdgeCellShift) return edge_cell_shift;
    // model_fields() admits kKnownInputs only, so this is a bug in the runtime, never a file's
    throw Error("internal error of the nequip runtime: no prepared input named '" + name +
                "' (known: " + join(kKnownInputs) + ")");
  }
};

// numpy-style names (what users of both front ends know), torch's for the rest.
std::string dtype_name(at::ScalarType dtype) {
  switch (dtype) {
    case at::kDouble: return "float64";
    case at::kFloat: return "float32";
    case at::kHalf: return "float16";
    case at::kLong: return "int64";
    case at::kInt: return "int32";
    case at::kShort: return "int16";
    case at::kChar: return "int8";
    case at::kByte: return "uint8";
    case at::kBool: return "bool";
    default: return c10::toString(dtype);
  }
}

void check_defined(const at::Tensor& tensor, const char* name) {
  if (!tensor.defined()) throw InputError(std::string(name) + " is required");
}

void check_real(const at::Tensor& tensor, const char* name) {
  if (tensor.is_complex() || tensor.scalar_type() == at::kBool) {
    throw InputError(std::string(name) + " must have a real dtype, got " +
                     dtype_name(tensor.scalar_type()));
  }
}

void check_integer(const at::Tensor& tensor, const char* name) {
  if (!at::isIntegralType(tensor.scalar_type(), /*includeBool=*/false)) {
    throw InputError(std::string(name) + " must have an integer dtype, got " +
                     dtype_name(tensor.scalar_type()));
  }
}

void check_finite(const at::Tensor& tensor, const char* name) {
  if (tensor.numel() > 0 && !at::isfinite(tensor).all().item<bool>()) {
    throw InputError(std::string(name) + " contains non-finite values (NaN or infinity)");
  }
}

void check_range(const at::Tensor& values, int64_t end, const char* name, const char* bound) {
  if (values.numel() == 0) return;
  const int64_t low = values.min().item<int64_t>();
  const int64_t high = values.max().item<int64_t>();
  if (low < 0 || high >= end) {
    throw InputError(std::string(name) + " values must lie in [0, " + bound + ") = [0, " +
                     std::to_string(end) + "), got values in [" + std::to_string(low) + ", " +
                     std::to_string(high) + "]");
  }
}

// Exactly dtype, contiguous, on device: AOTI models check none of this (FILE_CONTRACT §4).
// (Not to(..., MemoryFormat::Contiguous): for tensors of fewer than four dimensions it
// returns a strided tensor unchanged.)
at::Tensor convert(const at::Tensor& tensor, const c10::Device& device, at::ScalarType dtype) {
  return tensor.to(device, dtype).contiguous();
}

// `tensor` in `dtype` where it is: the inputs are checked there (on the CPU for every front
// end), so that checking a call on a GPU reads nothing back from the GPU.
at::Tensor as_dtype(const at::Tensor& tensor, at::ScalarType dtype) {
  return tensor.to(dtype).contiguous();
}

// `takes_local_mask`: whether the model has a local_mask input (checked by the caller, who
// knows the file to name when a mask is given to a model without one).
PreparedInputs prepare_inputs(const Inputs& inputs, int64_t num_types,
                              const c10::Device& device, bool takes_local_mask) {
  // Converted to their dtypes and checked where they are given, then moved to the device.
  check_defined(inputs.pos, kPos);
  check_real(inputs.pos, kPos);
  if (inputs.pos.dim() != 2 || inputs.pos.size(1) != 3) {
    throw InputError("pos must have shape (N, 3), got " + shape_string(inputs.pos));
  }
  const int64_t num_atoms = inputs.pos.size(0);
  if (num_atoms == 0) throw InputError("pos must hold at least one atom, got shape (0, 3)");
  at::Tensor pos = as_dtype(inputs.pos, at::kDouble);
  check_finite(pos, kPos);

  check_defined(inputs.atom_types, kAtomTypes);
  check_integer(inputs.atom_types, kAtomTypes);
  if (inputs.atom_types.dim() != 1 || inputs.atom_types.size(0) != num_atoms) {
    throw InputError("atom_types must have shape (N,) = (" + std::to_string(num_atoms) +
                     ",), got " + shape_string(inputs.atom_types));
  }
  at::Tensor atom_types = as_dtype(inputs.atom_types, at::kLong);
  check_range(atom_types, num_types, kAtomTypes, "num_types");

  check_defined(inputs.edge_index, kEdgeIndex);
  check_integer(inputs.edge_index, kEdgeIndex);
  if (inputs.edge_index.dim() != 2 || inputs.edge_index.size(0) != 2) {
    throw InputError("edge_index must have shape (2, E), got " +
                     shape_string(inputs.edge_index));
  }
  const int64_t num_edges = inputs.edge_index.size(1);
  at::Tensor edge_index = as_dtype(inputs.edge_index, at::kLong);
  check_range(edge_index, num_atoms, kEdgeIndex, "N");

  at::Tensor edge_cell_shift;
  if (inputs.edge_cell_shift.defined()) {
    check_real(inputs.edge_cell_shift, kEdgeCellShift);
    if (inputs.edge_cell_shift.dim() != 2 || inputs.edge_cell_shift.size(0) != num_edges ||
        inputs.edge_cell_shift.size(1) != 3) {
      throw InputError("edge_cell_shift must have shape (E, 3) = (" +
                       std::to_string(num_edges) + ", 3), got " +
                       shape_string(inputs.edge_cell_shift));
    }
    edge_cell_shift = as_dtype(inputs.edge_cell_shift, at::kDouble);
    check_finite(edge_cell_shift, kEdgeCellShift);
  } else {
    edge_cell_shift = at::zeros({num_edges, 3}, at::TensorOptions(at::kDouble));
  }

  at::Tensor cell;
  if (inputs.cell.defined()) {
    check_real(inputs.cell, kCell);
    const bool square = inputs.cell.dim() == 2 && inputs.cell.size(0) == 3 &&
                        inputs.cell.size(1) == 3;
    const bool framed = inputs.cell.dim() == 3 && inputs.cell.size(0) == 1 &&
                        inputs.cell.size(1) == 3 && inputs.cell.size(2) == 3;
    if (!square && !framed) {
      throw InputError("cell must have shape (3, 3) or (1, 3, 3), got " +
                       shape_string(inputs.cell));
    }
    cell = as_dtype(inputs.cell, at::kDouble).reshape({1, 3, 3});
    check_finite(cell, kCell);
  } else {
    cell = at::zeros({1, 3, 3}, at::TensorOptions(at::kDouble));
  }

  // Every atom is local unless told otherwise: the model then sums every atomic energy.
  at::Tensor local_mask;
  if (inputs.local_mask.defined()) {
    if (!at::isIntegralType(inputs.local_mask.scalar_type(), /*includeBool=*/true)) {
      throw InputError(std::string("local_mask must have a bool or integer dtype, got ") +
                       dtype_name(inputs.local_mask.scalar_type()));
    }
    if (inputs.local_mask.dim() != 1 || inputs.local_mask.size(0) != num_atoms) {
      throw InputError("local_mask must have shape (N,) = (" + std::to_string(num_atoms) +
                       ",), got " + shape_string(inputs.local_mask));
    }
    local_mask = as_dtype(inputs.local_mask, at::kBool);
  } else if (takes_local_mask) {
    local_mask = at::ones({num_atoms}, at::TensorOptions(at::kBool));
  }

  PreparedInputs prepared;
  prepared.volume = std::abs(at::linalg_det(cell[0].cpu()).item<double>());
  auto to_device = [&](at::Tensor& tensor) {
    return tensor.defined() ? tensor.to(device, /*non_blocking=*/false) : tensor;
  };
  prepared.local_mask = to_device(local_mask);
  prepared.pos = to_device(pos);
  prepared.atom_types = to_device(atom_types);
  prepared.edge_index = to_device(edge_index);
  prepared.edge_cell_shift = to_device(edge_cell_shift);
  prepared.cell = to_device(cell);
  return prepared;
}

// Whether every value of a contiguous float64 CPU tensor is finite (the runtime's outputs).
bool all_finite(const at::Tensor& tensor) {
  const double* values = tensor.data_ptr<double>();
  return std::all_of(values, values + tensor.numel(),
                     [](double value) { return std::isfinite(value); });
}

// The two atoms of the shortest edge and its length; empty without edges. `pos` (N, 3),
// `edge_cell_shift` (E, 3) and `cell` (3, 3) float64, `edge_index` (2, E) int64.
std::optional<NonFiniteOutputError::ClosestPair> closest_pair(const at::Tensor& pos,
                                                              const at::Tensor& edge_index,
                                                              const at::Tensor& edge_cell_shift,
                                                              const at::Tensor& cell) {
  if (edge_index.size(1) == 0) return std::nullopt;
  const at::Tensor centre = edge_index[0];
  const at::Tensor neighbour = edge_index[1];
  const at::Tensor vectors = pos.index_select(0, neighbour) - pos.index_select(0, centre) +
                             at::matmul(edge_cell_shift, cell);
  const at::Tensor lengths = at::linalg_vector_norm(vectors, 2, {1});
  const int64_t shortest = lengths.argmin().item<int64_t>();
  return NonFiniteOutputError::ClosestPair{centre[shortest].item<int64_t>(),
                                           neighbour[shortest].item<int64_t>(),
                                           lengths[shortest].item<double>()};
}

std::optional<NonFiniteOutputError::ClosestPair> closest_pair(const PreparedInputs& inputs) {
  return closest_pair(inputs.pos, inputs.edge_index, inputs.edge_cell_shift, inputs.cell[0]);
}

// The closest pair of an unchecked frame (Inputs, any dtypes, on any device), on the CPU.
std::optional<NonFiniteOutputError::ClosestPair> closest_pair(const Inputs& frame) {
  const auto f64 = at::TensorOptions(at::kDouble);
  const at::Tensor pos = frame.pos.to(at::kCPU, at::kDouble).reshape({-1, 3});
  const at::Tensor edge_index = frame.edge_index.to(at::kCPU, at::kLong).reshape({2, -1});
  const int64_t num_edges = edge_index.size(1);
  const at::Tensor shift = frame.edge_cell_shift.defined()
                               ? frame.edge_cell_shift.to(at::kCPU, at::kDouble).reshape({num_edges, 3})
                               : at::zeros({num_edges, 3}, f64);
  const at::Tensor cell =
      frame.cell.defined() ? frame.cell.to(at::kCPU, at::kDouble).reshape({3, 3}) : at::zeros({3, 3}, f64);
  return closest_pair(pos, edge_index, shift, cell);
}

// A metadata value that must be a positive decimal number (r_max, closest_training_pair).
double positive_number(const std::string& path, const std::map<std::string, std::string>& metadata,
                       const std::string& key) {
  const auto found = metadata.find(key);
  if (found == metadata.end()) throw ModelFileError(path + ": required metadata key '" + key + "' is missing");
  double value = 0.0;
  size_t used = 0;
  try {
    value = std::stod(found->second, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != found->second.size() || !std::isfinite(value) || value <= 0.0) {
    throw ModelFileError(path + ": metadata key '" + key +
                         "' is malformed: expected a positive decimal number, got '" + found->second + "'");
  }
  return value;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// NonFiniteOutputError

NonFiniteOutputError::NonFiniteOutputError(const std::string& path, double r_max,
                                           std::optional<ClosestPair> closest)
    : Error(non_finite_message(path, r_max, closest,
                               closest && closest->distance < kOverlapFraction * r_max,
                               default_pair(closest))),
      path_(path),
      r_max_(r_max),
      closest_(closest) {}

bool NonFiniteOutputError::atoms_overlap() const {
  return closest_ && closest_->distance < kOverlapFraction * r_max_;
}

std::string NonFiniteOutputError::message(const std::string& pair) const {
  return non_finite_message(path_, r_max_, closest_, atoms_overlap(), pair);
}

// ---------------------------------------------------------------------------------------
// The guards of a model's outputs

void check_finite_outputs(const std::string& path, double r_max, const Inputs& frame,
                          const at::Tensor& atomic_energy, const at::Tensor& forces) {
  const auto finite = [](const at::Tensor& tensor) {
    return tensor.numel() == 0 || at::isfinite(tensor).all().item<bool>();
  };
  if (finite(atomic_energy) && finite(forces)) return;
  throw NonFiniteOutputError(path, r_max,
                             translate_torch_errors(path + ": finding the closest atoms",
                                                    [&] { return closest_pair(frame); }));
}

std::optional<std::string> close_pair_warning(const std::string& path,
                                              const std::map<std::string, std::string>& metadata,
                                              const Inputs& frame) {
  const double r_max = positive_number(path, metadata, "r_max");
  const bool recorded = metadata.count("closest_training_pair") != 0;
  const double threshold = recorded ? positive_number(path, metadata, "closest_training_pair")
                                    : NonFiniteOutputError::kOverlapFraction * r_max;
  const std::optional<NonFiniteOutputError::ClosestPair> closest =
      translate_torch_errors(path + ": finding the closest atoms", [&] { return closest_pair(frame); });
  if (!closest || !(closest->distance < threshold)) return std::nullopt;
  const std::string bound =
      recorded ? "the closest pair the model was trained on, " + short_number(threshold) + " Å"
               : short_number(NonFiniteOutputError::kOverlapFraction) + " * r_max = " + short_number(threshold) + " Å";
  return path + ": " + default_pair(closest) + " are " + short_number(closest->distance) +
         " Å apart, closer than " + bound +
         ": the model extrapolates there and its energy and forces may be far off; check the structure "
         "(this warning is given once per model)";
}

// ---------------------------------------------------------------------------------------
// Metadata without the model

Metadata read_metadata(const std::string& path) {
  const ModelFormat format = format_from_extension(path);
  if (!std::filesystem::is_regular_file(path)) throw ModelFileError(path + ": no such file");
  ArchiveContents contents = read_archive(path);
  if (*contents.format != format) {
    throw ModelFileError(path + ": the file name says " + format_description(format) +
                         " but the file is " + format_description(*contents.format));
  }
  if (format == ModelFormat::TorchScript) {
    return detail::parse_metadata(path, std::move(contents.extra_files));
  }
  std::unordered_map<std::string, std::string> stored = translate_torch_errors(
      path + ": reading the AOTInductor metadata", [&] {
        return torch::inductor::AOTIModelPackageLoader::load_metadata_from_package(path,
                                                                                   "model");
      });
  return detail::parse_metadata(path, {stored.begin(), stored.end()});
}

// ---------------------------------------------------------------------------------------
// Model

class Model::Impl {
 public:
  Impl(const std::string& path, const std::string& requested_device)
      : path_(path), format_(format_from_extension(path)), metadata_(read_metadata(path)) {
    try {
      device_ = parse_device(select_device(requested_device, metadata_.compiled_for,
                                           /*local_rank=*/0, cuda_device_count()));
    } catch (const DeviceError& error) {
      throw DeviceError(path_ + ": " + error.what());
    }
    const std::string device_type = c10::DeviceTypeName(device_.type(), /*lower_case=*/true);
    if (!metadata_.compiled_for.empty() && metadata_.compiled_for != device_type) {
      throw DeviceError(path_ + ": compiled for device '" + metadata_.compiled_for +
                        "', cannot run on device '" + device_.str() + "'; compile it again for '" +
                        device_type + "' (nequip-compile ... --device " + device_type + ")");
    }
    if (format_ == ModelFormat::TorchScript) {
      load_torchscript();
    } else {
      load_aoti();
    }
  }

  ~Impl() { detail::release_kept_block(); }

  bool takes(const std::string& name) const {
    return std::find(input_names_.begin(), input_names_.end(), name) != input_names_.end();
  }
  bool returns(const std::string& name) const {
    return std::find(output_names_.begin(), output_names_.end(), name) != output_names_.end();
  }

  Outputs compute(const Inputs& inputs) {
    // Ignoring the mask would count the energy of every atom given: never silently.
    if (inputs.local_mask.defined() && !takes(kLocalMask)) {
      throw InputError(
          path_ + ": this model takes no local_mask (it counts the energy of every atom it is "
                  "given); compile it with `nequip-compile ... --target pair_nequip_domain` "
                  "(.pt2) or again with this version of nequip (.pth)");
    }
    PreparedInputs prepared =
        prepare_inputs(inputs, metadata_.num_types, device_, takes(kLocalMask));
    set_tf32();
    detail::ReuseLargeBlocksInThisCall reuse_blocks;
    std::map<std::string, at::Tensor> raw = translate_torch_errors(
        path_ + ": running the model", [&] {
          return format_ == ModelFormat::TorchScript ? run_torchscript(prepared)
                                                     : run_aoti(prepared);
        });
    return checked_outputs(std::move(raw), prepared);
  }

  bool exchanges_features() const {
    if (metadata_.layer_feature_widths.empty() || !takes(kLocalMask)) return false;
    return format_ == ModelFormat::TorchScript || !aoti_parts_.empty();
  }

  Outputs compute_exchanging(const Inputs& inputs, FeatureExchange& exchange) {
    if (!exchanges_features()) {
      throw InputError(path_ + ": this file cannot run layer by layer with a feature exchange "
                       "(LAMMPS on several MPI ranks); compile the model again with this "
                       "version of nequip: `nequip-compile ... --target pair_nequip_domain` "
                       "(.pt2) or `--mode torchscript` (.pth)");
    }
    if (!inputs.local_mask.defined()) {
      throw InputError("the layer-by-layer evaluation needs local_mask (the owned atoms)");
    }
    // a rank without atoms, not even ghosts: the others' exchanges still need its part
    if (inputs.pos.defined() && inputs.pos.dim() == 2 && inputs.pos.size(0) == 0) {
      return exchange_nothing(exchange);
    }
    PreparedInputs prepared = prepare_inputs(inputs, metadata_.num_types, device_, true);
    // an edge centred on a ghost would count its owner's edges twice (the exchange already
    // brings them): every centre must be a local node
    const at::Tensor centred_off = prepared.local_mask.index_select(0, prepared.edge_index[0])
                                       .logical_not()
                                       .nonzero();
    if (centred_off.size(0) > 0) {
      const int64_t edge = centred_off[0].item<int64_t>();
      throw InputError("edge " + std::to_string(edge) + " is centred on node " +
                       std::to_string(prepared.edge_index[0][edge].item<int64_t>()) +
                       ", which is not local: in a layer-by-layer evaluation every edge is "
                       "centred on a local node (local_mask)");
    }
    set_tf32();
    detail::ReuseLargeBlocksInThisCall reuse_blocks;
    std::map<std::string, at::Tensor> raw = translate_torch_errors(
        path_ + ": running the model layer by layer", [&] { return run_layered(prepared, exchange); });
    return checked_outputs(std::move(raw), prepared);
  }

  std::string path_;
  ModelFormat format_;
  c10::Device device_{at::kCPU};
  Metadata metadata_;
  std::vector<std::string> input_names_;
  std::vector<std::string> output_names_;
  std::vector<std::string> warnings_;

 private:
  void load_torchscript() {
    // Our files list their fields; those of other producers take and give §3's.
    input_names_ = model_fields(metadata_, path_, "nequip_torchscript_inputs", kRequiredInputs,
                                kKnownInputs, kRequiredInputs);
    output_names_ = model_fields(metadata_, path_, "nequip_torchscript_outputs",
                                 kTorchScriptOutputs, kKnownOutputs, kRequiredOutputs);
    module_ = translate_torch_errors(path_ + ": loading the TorchScript model", [&] {
      torch::jit::Module module = torch::jit::load(path_, device_);
      module.eval();
      return module;
    });
  }

  void load_aoti() {
    input_names_ = model_fields(metadata_, path_, "nequip_aoti_inputs", kRequiredInputs,
                                kKnownInputs, kRequiredInputs);
    output_names_ = model_fields(metadata_, path_, "nequip_aoti_outputs", kAotiDefaultOutputs,
                                 kKnownOutputs, kRequiredOutputs);
    // torch's packages always say their device (checked against device_ by the constructor)
    if (metadata_.raw.find(kAotiDeviceKey) == metadata_.raw.end()) {
      throw ModelFileError(path_ + ": required metadata key '" + kAotiDeviceKey + "' is missing");
    }
    // The CPU runs the kernels of a CPU package and the host code of a CUDA one; torch
    // records the vector ISA of the kernels.
    if (device_.is_cpu()) check_cpu_isa(path_, metadata_);
    check_torch_version(path_, metadata_, warnings_);
    auto load = [&](const std::string& name) {
      return translate_torch_errors(path_ + ": loading the AOTInductor package", [&] {
        return std::make_unique<torch::inductor::AOTIModelPackageLoader>(
            path_, name, /*run_single_threaded=*/false, /*num_runners=*/1,
            device_.is_cuda() ? device_.index() : c10::DeviceIndex(-1));
      });
    };
    aoti_ = load("model");
    // the layer-by-layer parts of target pair_nequip_domain, each a model of the package
    auto parts = metadata_.raw.find("nequip_aoti_parts");
    if (parts != metadata_.raw.end()) {
      std::vector<std::string> expected = {"node_embedding", "edge_embedding"};
      for (int64_t k = 0; k < metadata_.num_layers; ++k) expected.push_back("layer_" + std::to_string(k));
      expected.push_back("energy_readout_vjp");
      for (int64_t k = metadata_.num_layers - 1; k >= 0; --k) {
        expected.push_back("layer_" + std::to_string(k) + "_vjp");
      }
      expected.push_back("edge_embedding_vjp");
      if (metadata_.num_layers < 1 || detail::split_words(parts->second) != expected) {
        throw ModelFileError(path_ + ": metadata key 'nequip_aoti_parts' is malformed: expected '" +
                             join(expected) + "' (num_layers " +
                             std::to_string(metadata_.num_layers) + "), got '" +
                             detail::printable(parts->second) + "'");
      }
      for (const std::string& name : expected) aoti_parts_[name] = load(name);
    }
  }

  std::map<std::string, at::Tensor> run_torchscript(const PreparedInputs& inputs) {
    // Forces and stress are autograd derivatives taken inside the model.
    at::AutoGradMode enable_grad(true);
    c10::Dict<std::string, at::Tensor> data;
    for (const std::string& name : input_names_) data.insert(name, inputs.get(name));
    c10::IValue result = module_->forward({data});
    if (!result.isGenericDict()) {
      throw TorchError(path_ + ": the TorchScript model must return Dict[str, Tensor], got " +
                       result.tagKind());
    }
    std::map<std::string, at::Tensor> outputs;
    for (const auto& item : result.toGenericDict()) {
      const std::string& name = item.key().toStringRef();
      if (std::find(output_names_.begin(), output_names_.end(), name) != output_names_.end()) {
        outputs[name] = item.value().toTensor().detach();
      }
    }
    return outputs;
  }

  // The model's choice (FILE_CONTRACT §2 allow_tf32) for torch's own matmuls; torch keeps it
  // process-wide, so it is set for every call (another model may have changed it).
  void set_tf32() const {
    if (!device_.is_cuda()) return;
    at::globalContext().setAllowTF32CuBLAS(metadata_.allow_tf32);
    at::globalContext().setAllowTF32CuDNN(metadata_.allow_tf32);
  }

  // The outputs of a call, collected and checked. A NaN would otherwise travel on into ASE's
  // results or LAMMPS' positions, far from its cause. One pass over the outputs; the cause is
  // looked for only when there is one.
  Outputs checked_outputs(std::map<std::string, at::Tensor> raw, const PreparedInputs& prepared) {
    Outputs outputs = collect_outputs(std::move(raw), prepared);
    if (!std::isfinite(outputs.total_energy) || !all_finite(outputs.atomic_energy) ||
        !all_finite(outputs.forces)) {
      throw NonFiniteOutputError(
          path_, metadata_.r_max,
          translate_torch_errors(path_ + ": finding the closest atoms",
                                 [&] { return closest_pair(prepared); }));
    }
    return outputs;
  }

  // The exchanges of a layer-by-layer call (as run_layered makes them) with no rows, and the
  // outputs of no atoms.
  Outputs exchange_nothing(FeatureExchange& exchange) const {
    const std::vector<int64_t>& widths = metadata_.layer_feature_widths;
    const auto f64 = at::TensorOptions(at::kDouble);
    for (size_t layer = 0; layer + 1 < widths.size(); ++layer) {
      at::Tensor rows = at::zeros({0, widths[layer]}, f64);
      exchange.forward(rows);
    }
    for (size_t layer = widths.size() - 1; layer-- > 0;) {
      at::Tensor rows = at::zeros({0, widths[layer]}, f64);
      exchange.reverse(rows);
    }
    Outputs outputs;
    outputs.atomic_energy = at::zeros({0}, f64);
    outputs.forces = at::zeros({0, 3}, f64);
    outputs.virial = at::zeros({3, 3}, f64);
    outputs.atom_virial = at::zeros({0, 3, 3}, f64);
    return outputs;
  }

  // The layer-by-layer evaluation: the model's parts one after the other, the exchange
  // between layers, then the backward pass layer by layer in reverse, with the exchange of
  // the gradients by the features (the ghosts' part belongs to their owners).
  std::map<std::string, at::Tensor> run_layered(const PreparedInputs& in,
                                                FeatureExchange& exchange) {
    std::unique_ptr<LayeredParts> parts;
    if (format_ == ModelFormat::TorchScript) {
      parts = std::make_unique<TorchScriptParts>(*module_);
    } else {
      parts = std::make_unique<AotiParts>(aoti_parts_);
    }
    const int64_t num_nodes = in.pos.size(0);
    const int64_t num_layers = metadata_.num_layers;
    const at::Tensor centre = in.edge_index[0];
    const at::Tensor neighbour = in.edge_index[1];

    // The node rows of the features (after them come the model's reference atoms, one per
    // type, which have no neighbours and never travel), through the exchange and back.
    auto exchanged = [&](const at::Tensor& values, bool forward) {
      at::Tensor rows = values.narrow(0, 0, num_nodes).to(at::kCPU, at::kDouble).contiguous();
      forward ? exchange.forward(rows) : exchange.reverse(rows);
      return at::cat({rows.to(values.device(), values.scalar_type()),
                      values.narrow(0, num_nodes, values.size(0) - num_nodes)});
    };

    const at::Tensor edge_vec = in.pos.index_select(0, neighbour) -
                                in.pos.index_select(0, centre) +
                                at::matmul(in.edge_cell_shift, in.cell[0]);
    auto [node_attrs, x] = parts->node_embedding(in.atom_types);
    auto [edge_sh, edge_radial] = parts->edge_embedding(edge_vec, in.atom_types, in.edge_index);
    std::vector<at::Tensor> layer_inputs;
    for (int64_t layer = 0; layer < num_layers; ++layer) {
      layer_inputs.push_back(x);
      at::Tensor out = parts->layer(layer, x, node_attrs, edge_sh, edge_radial, in.edge_index);
      // ghosts have no edges here: their features are their owners'
      x = layer + 1 < num_layers ? exchanged(out, true) : out;
    }
    auto [atomic_energy, gradient] = parts->energy_readout_vjp(x, in.atom_types, in.local_mask);
    at::Tensor sh_gradient = at::zeros_like(edge_sh);
    at::Tensor radial_gradient = at::zeros_like(edge_radial);
    for (int64_t layer = num_layers - 1; layer >= 0; --layer) {
      std::vector<at::Tensor> grads = parts->layer_vjp(layer, layer_inputs[layer], node_attrs,
                                                       edge_sh, edge_radial, in.edge_index,
                                                       gradient);
      sh_gradient += grads[0];
      radial_gradient += grads[1];
      if (layer > 0) gradient = exchanged(grads[2], false);
    }
    const at::Tensor edge_grad = parts->edge_embedding_vjp(edge_vec, in.atom_types, in.edge_index,
                                                           sh_gradient, radial_gradient);

    // forces and virials from dE/d(edge vector), as NequIPModel._energy_and_derivatives
    const at::Tensor forces = at::zeros({num_nodes, 3}, edge_grad.options())
                                  .index_add(0, centre, edge_grad)
                                  .index_add(0, neighbour, edge_grad, -1.0);
    const at::Tensor outer = edge_vec.unsqueeze(-1) * edge_grad.unsqueeze(-2);
    const at::Tensor edge_virial = -0.5 * (outer + outer.transpose(-1, -2));
    const at::Tensor half = 0.5 * edge_virial;
    const at::Tensor atom_virial = at::zeros({num_nodes, 3, 3}, edge_virial.options())
                                       .index_add(0, centre, half)
                                       .index_add(0, neighbour, half);
    return {{kAtomicEnergy, atomic_energy},
            {kTotalEnergy, atomic_energy.sum().reshape({1})},
            {kForces, forces},
            {kVirial, edge_virial.sum(0)},
            {kAtomVirial, atom_virial}};
  }

  // The parts of a layer-by-layer evaluation (the methods of NequIPModel of the same names;
  // aotinductor.part_names), called in the order of run_layered. Tensors in and out carry
  // no autograd history.
  class LayeredParts {
   public:
    virtual ~LayeredParts() = default;
    // (node_attrs, features), both with N + num_types rows (the reference atoms last)
    virtual std::pair<at::Tensor, at::Tensor> node_embedding(const at::Tensor& atom_types) = 0;
    // (edge_sh, edge_radial)
    virtual std::pair<at::Tensor, at::Tensor> edge_embedding(const at::Tensor& edge_vec,
                                                             const at::Tensor& atom_types,
                                                             const at::Tensor& edge_index) = 0;
    virtual at::Tensor layer(int64_t index, const at::Tensor& x, const at::Tensor& node_attrs,
                             const at::Tensor& edge_sh, const at::Tensor& edge_radial,
                             const at::Tensor& edge_index) = 0;
    // (atomic energies (N, 1), 0 where not local; their sum's gradient by x)
    virtual std::pair<at::Tensor, at::Tensor> energy_readout_vjp(const at::Tensor& x,
                                                                 const at::Tensor& atom_types,
                                                                 const at::Tensor& local_mask) = 0;
    // gradients by edge_sh, edge_radial and (index > 0) x, from the gradient by the output
    virtual std::vector<at::Tensor> layer_vjp(int64_t index, const at::Tensor& x,
                                              const at::Tensor& node_attrs,
                                              const at::Tensor& edge_sh,
                                              const at::Tensor& edge_radial,
                                              const at::Tensor& edge_index,
                                              const at::Tensor& grad_out) = 0;
    // the gradient by the edge vectors
    virtual at::Tensor edge_embedding_vjp(const at::Tensor& edge_vec, const at::Tensor& atom_types,
                                          const at::Tensor& edge_index, const at::Tensor& grad_sh,
                                          const at::Tensor& grad_radial) = 0;
  };

  // TorchScript: the exported methods, differentiated by torch's autograd at run time. Each
  // layer's input features and the edge embeddings are leaves of their own, and the graphs
  // of the forward pass are kept until the backward pass (nothing is computed twice).
  class TorchScriptParts : public LayeredParts {
   public:
    explicit TorchScriptParts(torch::jit::Module& module) : module_(module) {}

    std::pair<at::Tensor, at::Tensor> node_embedding(const at::Tensor& atom_types) override {
      at::Tensor node_attrs = call("node_attributes", {atom_types}).toTensor().detach();
      return {node_attrs, call("node_embedding", {node_attrs}).toTensor().detach()};
    }
    std::pair<at::Tensor, at::Tensor> edge_embedding(const at::Tensor& edge_vec,
                                                     const at::Tensor& atom_types,
                                                     const at::Tensor& edge_index) override {
      edge_vec_ = edge_vec.detach().requires_grad_(true);
      auto out = call("edge_embedding", {edge_vec_, atom_types, edge_index}).toTuple();
      edge_sh_ = out->elements()[0].toTensor();
      edge_radial_ = out->elements()[1].toTensor();
      sh_leaf_ = edge_sh_.detach().requires_grad_(true);
      radial_leaf_ = edge_radial_.detach().requires_grad_(true);
      return {edge_sh_.detach(), edge_radial_.detach()};
    }
    at::Tensor layer(int64_t index, const at::Tensor& x, const at::Tensor& node_attrs,
                     const at::Tensor&, const at::Tensor&, const at::Tensor& edge_index) override {
      // the first layer's input is a function of the types: no gradient
      at::Tensor input = index == 0 ? x : x.detach().requires_grad_(true);
      at::Tensor out =
          call("layer", {index, input, node_attrs, sh_leaf_, radial_leaf_, edge_index}).toTensor();
      layer_inputs_.push_back(input);
      layer_outputs_.push_back(out);
      return out.detach();
    }
    std::pair<at::Tensor, at::Tensor> energy_readout_vjp(const at::Tensor& x,
                                                         const at::Tensor& atom_types,
                                                         const at::Tensor& local_mask) override {
      at::Tensor input = x.detach().requires_grad_(true);
      at::Tensor energy = call("energy_readout", {input, atom_types}).toTensor();
      energy = at::where(local_mask.unsqueeze(-1), energy, at::zeros_like(energy));
      at::Tensor grad = torch::autograd::grad({energy.sum()}, {input})[0];
      return {energy.detach(), grad};
    }
    std::vector<at::Tensor> layer_vjp(int64_t index, const at::Tensor&, const at::Tensor&,
                                      const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                      const at::Tensor& grad_out) override {
      std::vector<at::Tensor> wrt = {sh_leaf_, radial_leaf_};
      if (index > 0) wrt.push_back(layer_inputs_[index]);
      std::vector<at::Tensor> grads =
          torch::autograd::grad({layer_outputs_[index]}, wrt, {grad_out},
                                /*retain_graph=*/false, /*create_graph=*/false,
                                /*allow_unused=*/true);
      for (size_t i = 0; i < grads.size(); ++i) {
        if (!grads[i].defined()) grads[i] = at::zeros_like(wrt[i]);
      }
      return grads;
    }
    at::Tensor edge_embedding_vjp(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                  const at::Tensor& grad_sh,
                                  const at::Tensor& grad_radial) override {
      at::Tensor grad = torch::autograd::grad({edge_sh_, edge_radial_}, {edge_vec_},
                                              {grad_sh, grad_radial}, /*retain_graph=*/false,
                                              /*create_graph=*/false, /*allow_unused=*/true)[0];
      return grad.defined() ? grad : at::zeros_like(edge_vec_);
    }

   private:
    c10::IValue call(const char* method, std::vector<c10::IValue> args) {
      return module_.get_method(method)(std::move(args));
    }
    at::AutoGradMode enable_grad_{true};
    torch::jit::Module& module_;
    at::Tensor edge_vec_, edge_sh_, edge_radial_, sh_leaf_, radial_leaf_;
    std::vector<at::Tensor> layer_inputs_, layer_outputs_;
  };

  // AOTInductor: one compiled model per part. A layer's forward part returns its output and
  // residuals, which its VJP takes back (aotinductor.split_joint).
  class AotiParts : public LayeredParts {
   public:
    using Loaders = std::map<std::string, std::unique_ptr<torch::inductor::AOTIModelPackageLoader>>;
    explicit AotiParts(Loaders& loaders) : loaders_(loaders) {}

    std::pair<at::Tensor, at::Tensor> node_embedding(const at::Tensor& atom_types) override {
      std::vector<at::Tensor> out = run("node_embedding", {atom_types}, 2);
      return {out[0], out[1]};
    }
    std::pair<at::Tensor, at::Tensor> edge_embedding(const at::Tensor& edge_vec,
                                                     const at::Tensor& atom_types,
                                                     const at::Tensor& edge_index) override {
      std::vector<at::Tensor> out = run("edge_embedding", {edge_vec, atom_types, edge_index}, 2);
      return {out[0], out[1]};
    }
    at::Tensor layer(int64_t index, const at::Tensor& x, const at::Tensor& node_attrs,
                     const at::Tensor& edge_sh, const at::Tensor& edge_radial,
                     const at::Tensor& edge_index) override {
      // the output, then what its VJP reads (kept until the backward pass)
      std::vector<at::Tensor> out =
          run("layer_" + std::to_string(index), {x, node_attrs, edge_sh, edge_radial, edge_index});
      residuals_.push_back(out);
      return out[0];
    }
    std::pair<at::Tensor, at::Tensor> energy_readout_vjp(const at::Tensor& x,
                                                         const at::Tensor& atom_types,
                                                         const at::Tensor& local_mask) override {
      std::vector<at::Tensor> out = run("energy_readout_vjp", {x, atom_types, local_mask}, 2);
      return {out[0], out[1]};
    }
    std::vector<at::Tensor> layer_vjp(int64_t index, const at::Tensor& x,
                                      const at::Tensor& node_attrs, const at::Tensor& edge_sh,
                                      const at::Tensor& edge_radial, const at::Tensor& edge_index,
                                      const at::Tensor& grad_out) override {
      std::vector<at::Tensor> inputs = {x, node_attrs, edge_sh, edge_radial, edge_index};
      std::vector<at::Tensor>& kept = residuals_.at(index);
      inputs.insert(inputs.end(), kept.begin(), kept.end());
      inputs.push_back(grad_out);
      kept.clear();  // freed as soon as used
      return run("layer_" + std::to_string(index) + "_vjp", std::move(inputs), index > 0 ? 3 : 2);
    }
    at::Tensor edge_embedding_vjp(const at::Tensor& edge_vec, const at::Tensor& atom_types,
                                  const at::Tensor& edge_index, const at::Tensor& grad_sh,
                                  const at::Tensor& grad_radial) override {
      return run("edge_embedding_vjp", {edge_vec, atom_types, edge_index, grad_sh, grad_radial},
                 1)[0];
    }

   private:
    // num_outputs 0: any number, at least one
    std::vector<at::Tensor> run(const std::string& name, std::vector<at::Tensor> inputs,
                                size_t num_outputs = 0) {
      for (at::Tensor& tensor : inputs) tensor = tensor.contiguous();
      std::vector<at::Tensor> out = loaders_.at(name)->run(inputs);
      if (num_outputs ? out.size() != num_outputs : out.empty()) {
        throw TorchError("the AOTInductor part '" + name + "' returned " +
                         std::to_string(out.size()) + " outputs, expected " +
                         (num_outputs ? std::to_string(num_outputs) : "at least one"));
      }
      return out;
    }
    c10::InferenceMode inference_;
    Loaders& loaders_;
    std::vector<std::vector<at::Tensor>> residuals_;  // per layer: its output, then residuals
  };

  std::map<std::string, at::Tensor> run_aoti(const PreparedInputs& inputs) {
    c10::InferenceMode inference;
    std::vector<at::Tensor> flat;
    for (const std::string& name : input_names_) flat.push_back(inputs.get(name));
    std::vector<at::Tensor> results = aoti_->run(flat);
    if (results.size() != output_names_.size()) {
      throw TorchError(path_ + ": the AOTInductor model returned " +
                       std::to_string(results.size()) + " outputs, its metadata names " +
                       std::to_string(output_names_.size()) + " (" + join(output_names_) + ")");
    }
    std::map<std::string, at::Tensor> outputs;
    for (size_t i = 0; i < results.size(); ++i) outputs[output_names_[i]] = results[i];
    return outputs;
  }

  // Float64 CPU copies of the model's outputs, shapes checked, with total energy, virial and
  // stress derived from one another where the model gives only some of them.
  Outputs collect_outputs(std::map<std::string, at::Tensor> raw,
                          const PreparedInputs& inputs) const {
    const int64_t num_atoms = inputs.pos.size(0);
    if (device_.is_cuda()) raw = copy_to_cpu(std::move(raw));
    auto take = [&](const char* name, std::vector<int64_t> shape) -> std::optional<at::Tensor> {
      auto it = raw.find(name);
      if (it == raw.end()) return std::nullopt;
      int64_t numel = 1;
      for (int64_t size : shape) numel *= size;
      if (it->second.numel() != numel) {
        throw TorchError(path_ + ": the model returned '" + name + "' with shape " +
                         shape_string(it->second) + " for " + std::to_string(num_atoms) +
                         " atoms");
      }
      return translate_torch_errors(path_ + ": reading output '" + name + "'", [&] {
        return convert(it->second.reshape(shape), at::kCPU, at::kDouble);
      });
    };
    auto require = [&](const char* name, std::vector<int64_t> shape) {
      std::optional<at::Tensor> tensor = take(name, std::move(shape));
      if (!tensor) throw TorchError(path_ + ": the model did not return '" + name + "'");
      return *tensor;
    };

    Outputs outputs;
    outputs.atomic_energy = require(kAtomicEnergy, {num_atoms});
    outputs.forces = require(kForces, {num_atoms, 3});
    std::optional<at::Tensor> total_energy = take(kTotalEnergy, {1});
    outputs.total_energy = total_energy ? total_energy->item<double>()
                                        : outputs.atomic_energy.sum().item<double>();

    const bool has_volume = inputs.volume > 0.0;
    std::optional<at::Tensor> stress = take(kStress, {3, 3});
    std::optional<at::Tensor> virial = take(kVirial, {3, 3});
    // Stress is per unit volume: meaningless (NaN from the model) without a volume.
    if (has_volume) {
      if (stress && !virial) virial = -*stress * inputs.volume;
      if (virial && !stress) stress = -*virial / inputs.volume;
      outputs.stress = stress;
    }
    outputs.virial = virial;
    outputs.atom_virial = take(kAtomVirial, {num_atoms, 3, 3});
    return outputs;
  }

  // The outputs of a call on a GPU, brought to the CPU in one copy (one synchronisation):
  // float64, flattened and concatenated on the device, split again on the host.
  std::map<std::string, at::Tensor> copy_to_cpu(std::map<std::string, at::Tensor> raw) const {
    return translate_torch_errors(path_ + ": copying the outputs to the CPU", [&] {
      std::vector<at::Tensor> flat;
      for (const auto& [name, tensor] : raw) flat.push_back(tensor.to(at::kDouble).reshape({-1}));
      const at::Tensor host = at::cat(flat).cpu();
      std::map<std::string, at::Tensor> outputs;
      int64_t offset = 0;
      for (const auto& [name, tensor] : raw) {
        outputs[name] = host.narrow(0, offset, tensor.numel()).view(tensor.sizes());
        offset += tensor.numel();
      }
      return outputs;
    });
  }

  std::optional<torch::jit::Module> module_;
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> aoti_;
  std::map<std::string, std::unique_ptr<torch::inductor::AOTIModelPackageLoader>> aoti_parts_;
};

Model::Model(const std::string& path, const std::string& device)
    : impl_(std::make_unique<Impl>(path, device)) {}
Model::~Model() = default;
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;

const std::string& Model::path() const { return impl_->path_; }
ModelFormat Model::format() const { return impl_->format_; }
c10::Device Model::device() const { return impl_->device_; }
const Metadata& Model::metadata() const { return impl_->metadata_; }
const std::vector<std::string>& Model::type_names() const {
  return impl_->metadata_.type_names;
}
int64_t Model::num_types() const { return impl_->metadata_.num_types; }
double Model::r_max() const { return impl_->metadata_.r_max; }
const std::vector<double>& Model::per_edge_type_cutoff() const {
  return impl_->metadata_.per_edge_type_cutoff;
}
const std::string& Model::model_dtype() const { return impl_->metadata_.model_dtype; }
int64_t Model::num_layers() const { return impl_->metadata_.num_layers; }
const std::vector<std::string>& Model::input_names() const { return impl_->input_names_; }
bool Model::takes(const std::string& input_name) const { return impl_->takes(input_name); }
const std::vector<std::string>& Model::output_names() const { return impl_->output_names_; }
bool Model::returns(const std::string& output_name) const {
  return impl_->returns(output_name);
}
const std::vector<std::string>& Model::warnings() const { return impl_->warnings_; }

Outputs Model::compute(const Inputs& inputs) { return impl_->compute(inputs); }
bool Model::exchanges_features() const { return impl_->exchanges_features(); }
Outputs Model::compute_exchanging(const Inputs& inputs, FeatureExchange& exchange) {
  return impl_->compute_exchanging(inputs, exchange);
}

std::string select_device(const std::string& requested, const std::string& compiled_for,
                          int local_rank, int num_cuda_devices) {
  const std::string name =
      !requested.empty() ? requested : (compiled_for.empty() ? "cpu" : compiled_for);
  const c10::Device device = device_from_name(name);
  if (!device.is_cuda() || device.has_index()) return name;
  if (num_cuda_devices < 1) {
    throw DeviceError("device 'cuda' requested but no CUDA device is visible to torch: use "
                      "device 'cpu' (and a model compiled for it), or a CUDA build of torch on "
                      "a machine with a GPU");
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

}  // namespace nequip
