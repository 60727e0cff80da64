// The model: a compiled file opened on a device, and its calls, whole or layer by layer.
#include <ATen/ATen.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/script.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <utility>

#include "archive.h"
#include "batch.h"
#include "call_memory.h"
#include "compatibility.h"
#include "fields.h"
#include "inputs.h"
#include "layered.h"
#include "metadata.h"
#include "nequip/runtime.h"
#include "output_checks.h"
#include "text.h"
#include "torch_errors.h"

namespace nequip {
namespace {

using namespace detail;

constexpr const char* kAotiDeviceKey = "AOTI_DEVICE_KEY";  // written by torch

// The input / output field names stored under `key`, checked against those the runtime knows.
std::vector<std::string> model_fields(const Metadata& metadata, const std::string& path,
                                      const std::string& key,
                                      const std::vector<std::string>& default_fields,
                                      const std::vector<std::string>& known,
                                      const std::vector<std::string>& required) {
  auto it = metadata.raw.find(key);
  if (it == metadata.raw.end()) return default_fields;
  std::vector<std::string> fields = split_words(it->second);
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

}  // namespace

class Model::Impl {
 public:
  Impl(const std::string& path, const std::string& requested_device, int local_rank) : path_(path) {
    Archive archive = read_archive(path);
    format_ = archive.format;
    metadata_ = parse_metadata(path, std::move(archive.metadata));
    device_ = model_device(path_, metadata_, requested_device, local_rank);
    if (format_ == ModelFormat::TorchScript) {
      load_torchscript();
    } else {
      load_aoti();
    }
    check_committee_outputs();
  }

  ~Impl() { release_kept_blocks(); }

  bool takes(const std::string& name) const {
    return std::find(input_names_.begin(), input_names_.end(), name) != input_names_.end();
  }
  bool returns(const std::string& name) const {
    return std::find(output_names_.begin(), output_names_.end(), name) != output_names_.end();
  }

  Outputs compute(const Inputs& inputs) {
    // Ignoring the mask would count the energy of every atom given: never silently.
    if (inputs.local_mask.defined() && !takes(kLocalMask)) {
      throw InputError(path_ +
                       ": this model takes no local_mask (it counts the energy of every atom it is "
                       "given); compile it with `nequip-compile ... --target pair_nequip_domain` "
                       "(.pt2) or again with this version of nequip (.pth)");
    }
    PreparedInputs prepared =
        prepare_inputs(inputs, metadata_.num_types, device_, takes(kLocalMask));
    // a file of target batch requires them; a TorchScript file takes one frame without
    if (format_ == ModelFormat::AOTInductor && takes_batches()) as_batch_of_one(prepared);
    set_tf32();
    ReuseLargeBlocksInThisCall reuse_blocks;
    std::map<std::string, at::Tensor> raw =
        translate_torch_errors(path_ + ": running the model", [&] {
          return format_ == ModelFormat::TorchScript ? run_torchscript(prepared)
                                                     : run_aoti(prepared);
        });
    return checked_outputs(std::move(raw), prepared);
  }

  // A committee's deviations are not among a batch's outputs: it takes one frame per call.
  bool takes_batches() const {
    return metadata_.committee_size == 1 && takes(kBatch) && takes(kNumAtoms);
  }

  BatchOutputs compute_batch(const BatchInputs& inputs) {
    if (metadata_.committee_size > 1) {
      throw InputError(path_ + ": a committee file (committee_size " +
                       std::to_string(metadata_.committee_size) +
                       ") takes one frame per call, which gives its deviations");
    }
    if (!takes_batches()) {
      throw InputError(path_ +
                       ": this file takes one frame per call (its inputs: " + join(input_names_) +
                       "); compile the model with `nequip-compile ... --target batch` (.pt2) "
                       "or again with this version of nequip (.pth)");
    }
    PreparedInputs prepared = prepare_batch_inputs(inputs, metadata_.num_types, device_);
    set_tf32();
    ReuseLargeBlocksInThisCall reuse_blocks;
    std::map<std::string, at::Tensor> raw =
        translate_torch_errors(path_ + ": running the model on a batch", [&] {
          return format_ == ModelFormat::TorchScript ? run_torchscript(prepared)
                                                     : run_aoti(prepared);
        });
    if (device_.is_cuda()) raw = copy_to_cpu(std::move(raw));
    BatchOutputs outputs = collect_batch_outputs(path_, std::move(raw), prepared);
    if (!batch_outputs_finite(outputs)) {
      throw NonFiniteOutputError(path_, metadata_.r_max,
                                 translate_torch_errors(path_ + ": finding the closest atoms", [&] {
                                   return closest_pair_of_batch(prepared);
                                 }));
    }
    return outputs;
  }

  bool exchanges_features() const {
    if (exchanged_widths().empty() || !takes(kLocalMask)) return false;
    if (metadata_.committee_size > 1) {
      return format_ == ModelFormat::TorchScript ? !committee_members_.empty()
                                                 : !committee_aoti_parts_.empty();
    }
    return format_ == ModelFormat::TorchScript || !aoti_parts_.empty();
  }

  // The widths of the layers' features of each model that runs layer by layer: one model's
  // layer_feature_widths, or a committee's members' own (committee_layer_feature_widths);
  // empty when the file records none.
  std::vector<std::vector<int64_t>> exchanged_widths() const {
    if (metadata_.committee_size > 1) return metadata_.committee_layer_feature_widths;
    if (metadata_.layer_feature_widths.empty()) return {};
    return {metadata_.layer_feature_widths};
  }

  Outputs compute_exchanging(const Inputs& inputs, FeatureExchange& exchange) {
    if (!exchanges_features()) {
      throw InputError(path_ +
                       ": this file cannot run layer by layer with a feature exchange "
                       "(LAMMPS on several MPI ranks); compile the model again with this "
                       "version of nequip: `nequip-compile ... --target pair_nequip_domain` "
                       "(.pt2) or `--mode torchscript` (.pth)");
    }
    if (!inputs.local_mask.defined()) {
      throw InputError("the layer-by-layer evaluation needs local_mask (the owned atoms)");
    }
    // a rank without atoms, not even ghosts: the others' exchanges still need its part
    if (inputs.pos.defined() && inputs.pos.dim() == 2 && inputs.pos.size(0) == 0) {
      return exchange_nothing(exchanged_widths(), exchange, metadata_.committee_size > 1);
    }
    PreparedInputs prepared = prepare_inputs(inputs, metadata_.num_types, device_, true);
    // an edge centered on a ghost would count its owner's edges twice (the exchange already
    // brings them): every center must be a local node
    const at::Tensor centered_off =
        prepared.local_mask.index_select(0, prepared.edge_index[0]).logical_not().nonzero();
    if (centered_off.size(0) > 0) {
      const int64_t edge = centered_off[0].item<int64_t>();
      throw InputError("edge " + std::to_string(edge) + " is centered on node " +
                       std::to_string(prepared.edge_index[0][edge].item<int64_t>()) +
                       ", which is not local: in a layer-by-layer evaluation every edge is "
                       "centered on a local node (local_mask)");
    }
    set_tf32();
    ReuseLargeBlocksInThisCall reuse_blocks;
    ExchangeRecord record;
    std::map<std::string, at::Tensor> raw =
        translate_torch_errors(path_ + ": running the model layer by layer", [&] {
          if (metadata_.committee_size > 1)
            return run_committee_layered(prepared, exchange, record);
          std::unique_ptr<LayeredParts> parts = format_ == ModelFormat::TorchScript
                                                    ? torchscript_parts(*module_)
                                                    : aoti_parts(aoti_parts_);
          return run_layered(*parts, prepared, metadata_.num_layers,
                             !metadata_.pair_potential.empty(), metadata_.layers_select_rows,
                             exchange, record);
        });
    return checked_outputs(std::move(raw), prepared, record.received_non_finite);
  }

  // A committee layer by layer: each member in turn, on the same inputs, each with its own
  // exchanges (the simplest exact way: members differ in widths and number of layers, and
  // share nothing but the inputs). The outputs are the members' mean (or the first member's,
  // committee_drive), as the whole file gives them on one process, and each member's forces,
  // energy and virial, from which the front end takes the deviations once the ranks' shares
  // are summed.
  std::map<std::string, at::Tensor> run_committee_layered(const PreparedInputs& prepared,
                                                          FeatureExchange& exchange,
                                                          ExchangeRecord& record) {
    const std::vector<std::vector<int64_t>>& widths = metadata_.committee_layer_feature_widths;
    std::vector<std::map<std::string, at::Tensor>> each;
    for (size_t member = 0; member < widths.size(); ++member) {
      const int64_t num_layers = static_cast<int64_t>(widths[member].size());
      if (format_ == ModelFormat::TorchScript) {
        // every member of this version has the method pair_energy (zeros without a pair
        // potential), whatever the first member's metadata says
        std::unique_ptr<LayeredParts> parts = torchscript_parts(committee_members_.at(member));
        each.push_back(run_layered(*parts, prepared, num_layers, true, metadata_.layers_select_rows,
                                   exchange, record));
      } else {
        const bool pair_potential = committee_aoti_parts_.at(member).count("pair_energy_vjp") > 0;
        std::unique_ptr<LayeredParts> parts = aoti_parts(committee_aoti_parts_.at(member));
        each.push_back(run_layered(*parts, prepared, num_layers, pair_potential,
                                   metadata_.layers_select_rows, exchange, record));
      }
    }
    const bool first =
        metadata_.raw.count("committee_drive") && metadata_.raw.at("committee_drive") == "first";
    std::map<std::string, at::Tensor> outputs;
    for (const auto& [name, value] : each[0]) {
      std::vector<at::Tensor> values;
      for (const auto& member : each) values.push_back(member.at(name));
      outputs[name] = first ? value : at::stack(values).mean(0);
    }
    std::vector<at::Tensor> forces, energies, virials;
    for (const auto& member : each) {
      forces.push_back(member.at(kForces));
      energies.push_back(member.at(kTotalEnergy).reshape({}));
      virials.push_back(member.at(kVirial));
    }
    outputs[kMemberForces] = at::stack(forces);
    outputs[kMemberEnergies] = at::stack(energies);
    outputs[kMemberVirials] = at::stack(virials);
    return outputs;
  }

  std::string path_;
  ModelFormat format_ = ModelFormat::TorchScript;
  c10::Device device_{at::kCPU};
  Metadata metadata_;
  std::vector<std::string> input_names_;
  std::vector<std::string> output_names_;
  std::vector<std::string> warnings_;
  // Outputs::close_pair given since loading (or since Model::report_close_pairs_again)
  bool close_pair_reported_ = false;

  double close_pair_threshold() const {
    return metadata_.closest_training_pair > 0.0
               ? metadata_.closest_training_pair
               : NonFiniteOutputError::kOverlapFraction * metadata_.r_max;
  }

 private:
  void load_torchscript() {
    // Our files list their fields; those of other producers take and give §3's.
    input_names_ = model_fields(metadata_, path_, "nequip_torchscript_inputs", kRequiredInputs,
                                kKnownInputs, kRequiredInputs);
    output_names_ = model_fields(metadata_, path_, "nequip_torchscript_outputs",
                                 kTorchScriptOutputs, kKnownOutputs, kRequiredOutputs);
    check_batch_fields(path_, "nequip_torchscript_inputs", input_names_);
    check_operators(path_, metadata_, /*differentiated=*/true);
    module_ = translate_torch_errors(path_ + ": loading the TorchScript model", [&] {
      torch::jit::Module module = torch::jit::load(path_, device_);
      module.eval();
      return module;
    });
    // a committee that runs layer by layer: its members' exported parts (Committee.members)
    if (metadata_.committee_size > 1 && !metadata_.committee_layer_feature_widths.empty()) {
      translate_torch_errors(path_ + ": finding the committee's members", [&] {
        const torch::jit::Module members = module_->attr("members").toModule();
        for (int64_t k = 0; k < metadata_.committee_size; ++k) {
          committee_members_.push_back(members.attr(std::to_string(k)).toModule());
        }
        return 0;
      });
    }
  }

  void load_aoti() {
    input_names_ = model_fields(metadata_, path_, "nequip_aoti_inputs", kRequiredInputs,
                                kKnownInputs, kRequiredInputs);
    output_names_ = model_fields(metadata_, path_, "nequip_aoti_outputs", kAotiDefaultOutputs,
                                 kKnownOutputs, kRequiredOutputs);
    check_batch_fields(path_, "nequip_aoti_inputs", input_names_);
    // torch's packages always say their device (checked against device_ by model_device)
    if (metadata_.raw.find(kAotiDeviceKey) == metadata_.raw.end()) {
      throw ModelFileError(path_ + ": required metadata key '" + kAotiDeviceKey + "' is missing");
    }
    // The CPU runs the kernels of a CPU package and the host code of a CUDA one; torch
    // records the vector ISA of the kernels.
    if (device_.is_cpu()) check_cpu_isa(path_, metadata_);
    check_torch_version(path_, metadata_, warnings_);
    check_operators(path_, metadata_, /*differentiated=*/false);
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
    if (parts != metadata_.raw.end() && metadata_.committee_size > 1) {
      load_committee_aoti_parts(split_words(parts->second), load);
    } else if (parts != metadata_.raw.end()) {
      const std::vector<std::string> expected =
          aoti_part_names(metadata_.num_layers, !metadata_.pair_potential.empty());
      if (metadata_.num_layers < 1 || split_words(parts->second) != expected) {
        throw ModelFileError(path_ + ": metadata key 'nequip_aoti_parts' is malformed: expected '" +
                             join(expected) + "' (num_layers " +
                             std::to_string(metadata_.num_layers) + "), got '" +
                             printable(parts->second) + "'");
      }
      for (const std::string& name : expected) aoti_parts_[name] = load(name);
    }
  }

  // A committee of target pair_nequip_domain: member k's parts are named "member<k>_" and the
  // part's name (aotinductor.part_names), member after member; a member with a pair potential
  // has the part pair_energy_vjp.
  template <class Load>
  void load_committee_aoti_parts(const std::vector<std::string>& listed, Load& load) {
    const auto& widths = metadata_.committee_layer_feature_widths;
    std::vector<std::string> expected;
    std::vector<std::pair<size_t, std::string>> member_parts;
    for (size_t k = 0; k < widths.size(); ++k) {
      const std::string prefix = "member" + std::to_string(k) + "_";
      const bool pair_potential =
          std::find(listed.begin(), listed.end(), prefix + "pair_energy_vjp") != listed.end();
      for (const std::string& name :
           aoti_part_names(static_cast<int64_t>(widths[k].size()), pair_potential)) {
        expected.push_back(prefix + name);
        member_parts.emplace_back(k, name);
      }
    }
    if (widths.empty() || listed != expected) {
      throw ModelFileError(path_ + ": metadata key 'nequip_aoti_parts' is malformed: expected '" +
                           join(expected) +
                           "' (the parts of each member, committee_layer_feature_widths), got '" +
                           printable(join(listed)) + "'");
    }
    committee_aoti_parts_.resize(widths.size());
    for (size_t i = 0; i < expected.size(); ++i) {
      committee_aoti_parts_[member_parts[i].first][member_parts[i].second] = load(expected[i]);
    }
  }

  // A committee file gives the deviations of its models, and only a committee file does.
  void check_committee_outputs() const {
    const bool committee = metadata_.committee_size > 1;
    for (const char* name : {kForceDeviation, kEnergyDeviation}) {
      if (returns(name) != committee) {
        throw ModelFileError(
            path_ + ": metadata keys 'committee_size' and '" +
            (format_ == ModelFormat::TorchScript ? "nequip_torchscript_outputs"
                                                 : "nequip_aoti_outputs") +
            "' disagree: " +
            (committee
                 ? "a committee of " + std::to_string(metadata_.committee_size) +
                       " models must return '" + name + "'"
                 : std::string("one model (no committee_size) cannot return '") + name + "'"));
      }
    }
  }

  std::map<std::string, at::Tensor> run_torchscript(const PreparedInputs& inputs) {
    // Forces and stress are autograd derivatives taken inside the model.
    at::AutoGradMode enable_grad(true);
    c10::Dict<std::string, at::Tensor> data;
    // optional inputs not given (local_mask of a batch; batch, num_atoms of one frame) stay out
    for (const std::string& name : input_names_) {
      if (inputs.get(name).defined()) data.insert(name, inputs.get(name));
    }
    c10::IValue result = module_->forward({data});
    if (!result.isGenericDict()) {
      throw TorchError(path_ + ": the TorchScript model must return Dict[str, Tensor], got " +
                       result.tagKind());
    }
    std::map<std::string, at::Tensor> outputs;
    for (const auto& item : result.toGenericDict()) {
      const std::string& name = item.key().toStringRef();
      if (returns(name)) outputs[name] = item.value().toTensor().detach();
    }
    return outputs;
  }

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
  // `received_non_finite`: what ExchangeRecord says of a layer-by-layer call.
  Outputs checked_outputs(std::map<std::string, at::Tensor> raw, const PreparedInputs& prepared,
                          bool received_non_finite = false) {
    Outputs outputs = collect_outputs(std::move(raw), prepared);
    if (!std::isfinite(outputs.total_energy) || !all_finite(outputs.atomic_energy) ||
        !all_finite(outputs.forces)) {
      throw NonFiniteOutputError(path_, metadata_.r_max, prepared.closest, received_non_finite);
    }
    const double threshold = close_pair_threshold();
    if (!close_pair_reported_ && prepared.closest && prepared.closest->distance < threshold) {
      outputs.close_pair =
          ClosePair{*prepared.closest, threshold, metadata_.closest_training_pair > 0.0};
      close_pair_reported_ = true;
    }
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
                         shape_string(it->second) + " for " + std::to_string(num_atoms) + " atoms");
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
    outputs.total_energy =
        total_energy ? total_energy->item<double>() : outputs.atomic_energy.sum().item<double>();

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
    outputs.force_deviation = take(kForceDeviation, {num_atoms});
    std::optional<at::Tensor> energy_deviation = take(kEnergyDeviation, {1});
    if (energy_deviation) outputs.energy_deviation = energy_deviation->item<double>();
    outputs.virial_deviation = take(kVirialDeviation, {3, 3});
    const int64_t committee_size = metadata_.committee_size;
    outputs.member_forces = take(kMemberForces, {committee_size, num_atoms, 3});
    outputs.member_energies = take(kMemberEnergies, {committee_size});
    outputs.member_virials = take(kMemberVirials, {committee_size, 3, 3});
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
  AotiLoaders aoti_parts_;
  // a committee that runs layer by layer: each member's TorchScript module, or AOTI parts
  std::vector<torch::jit::Module> committee_members_;
  std::vector<AotiLoaders> committee_aoti_parts_;
};

Model::Model(const std::string& path, const std::string& device, int local_rank)
    : impl_(std::make_unique<Impl>(path, device, local_rank)) {}
Model::~Model() = default;
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;

const std::string& Model::path() const { return impl_->path_; }
ModelFormat Model::format() const { return impl_->format_; }
c10::Device Model::device() const { return impl_->device_; }
const Metadata& Model::metadata() const { return impl_->metadata_; }
const std::vector<std::string>& Model::type_names() const { return impl_->metadata_.type_names; }
int64_t Model::num_types() const { return impl_->metadata_.num_types; }
double Model::r_max() const { return impl_->metadata_.r_max; }
const std::vector<double>& Model::per_edge_type_cutoff() const {
  return impl_->metadata_.per_edge_type_cutoff;
}
const std::string& Model::model_dtype() const { return impl_->metadata_.model_dtype; }
int64_t Model::num_layers() const { return impl_->metadata_.num_layers; }
int64_t Model::committee_size() const { return impl_->metadata_.committee_size; }
const std::vector<std::string>& Model::input_names() const { return impl_->input_names_; }
bool Model::takes(const std::string& input_name) const { return impl_->takes(input_name); }
const std::vector<std::string>& Model::output_names() const { return impl_->output_names_; }
bool Model::returns(const std::string& output_name) const { return impl_->returns(output_name); }
const std::vector<std::string>& Model::warnings() const { return impl_->warnings_; }
double Model::close_pair_threshold() const { return impl_->close_pair_threshold(); }
void Model::report_close_pairs_again() { impl_->close_pair_reported_ = false; }

Outputs Model::compute(const Inputs& inputs) { return impl_->compute(inputs); }
bool Model::takes_batches() const { return impl_->takes_batches(); }
BatchOutputs Model::compute_batch(const BatchInputs& inputs) {
  return impl_->compute_batch(inputs);
}
bool Model::exchanges_features() const { return impl_->exchanges_features(); }
Outputs Model::compute_exchanging(const Inputs& inputs, FeatureExchange& exchange) {
  return rethrow_callback_errors([&] { return impl_->compute_exchanging(inputs, exchange); });
}

}  // namespace nequip
