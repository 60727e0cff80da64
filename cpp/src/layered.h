// The layer-by-layer evaluation of a model (LAMMPS on several MPI ranks): the model's parts
// one after the other, the front end's FeatureExchange between layers, then the backward pass
// layer by layer in reverse. Internal to the runtime.
#pragma once

#include <ATen/Tensor.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/script.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "inputs.h"
#include "nequip/runtime.h"

namespace nequip::detail {

// The parts of a layer-by-layer evaluation (the methods of NequIPModel of the same names;
// aotinductor.part_names), called in the order of run_layered. Tensors in and out carry no
// autograd history.
class LayeredParts {
 public:
  virtual ~LayeredParts() = default;
  // (node_attrs, features), both with N + num_types rows (the reference atoms last)
  virtual std::pair<at::Tensor, at::Tensor> node_embedding(const at::Tensor& atom_types) = 0;
  // (edge_sh, edge_radial)
  virtual std::pair<at::Tensor, at::Tensor> edge_embedding(const at::Tensor& edge_vec,
                                                           const at::Tensor& atom_types,
                                                           const at::Tensor& edge_index) = 0;
  // The output features of the nodes `rows` (row k: node rows[k]'s), or of every node where
  // `rows` is undefined (files without Metadata::layers_select_rows).
  virtual at::Tensor layer(int64_t index, const at::Tensor& x, const at::Tensor& node_attrs,
                           const at::Tensor& edge_sh, const at::Tensor& edge_radial,
                           const at::Tensor& edge_index, const at::Tensor& rows) = 0;
  // (atomic energies (N, 1), 0 where not local; their sum's gradient by x)
  virtual std::pair<at::Tensor, at::Tensor> energy_readout_vjp(const at::Tensor& x,
                                                               const at::Tensor& atom_types,
                                                               const at::Tensor& local_mask) = 0;
  // gradients by edge_sh, edge_radial and (index > 0) x, from the gradient by the output
  virtual std::vector<at::Tensor> layer_vjp(int64_t index, const at::Tensor& x,
                                            const at::Tensor& node_attrs, const at::Tensor& edge_sh,
                                            const at::Tensor& edge_radial,
                                            const at::Tensor& edge_index, const at::Tensor& rows,
                                            const at::Tensor& grad_out) = 0;
  // the gradient by the edge vectors
  virtual at::Tensor edge_embedding_vjp(const at::Tensor& edge_vec, const at::Tensor& atom_types,
                                        const at::Tensor& edge_index, const at::Tensor& grad_sh,
                                        const at::Tensor& grad_radial) = 0;
  // a model with a pair potential: (per-atom pair energies (N, 1), 0 where not local; their
  // sum's gradient by the edge vectors)
  virtual std::pair<at::Tensor, at::Tensor> pair_energy_vjp(const at::Tensor& edge_vec,
                                                            const at::Tensor& atom_types,
                                                            const at::Tensor& edge_index,
                                                            const at::Tensor& local_mask) = 0;
};

// A .pth's exported methods, differentiated by torch's autograd at run time.
std::unique_ptr<LayeredParts> torchscript_parts(torch::jit::Module& module);

// A .pt2 of target pair_nequip_domain: one AOTInductor model per part, by name.
using AotiLoaders = std::map<std::string, std::unique_ptr<torch::inductor::AOTIModelPackageLoader>>;
std::unique_ptr<LayeredParts> aoti_parts(AotiLoaders& loaders);

// The names of the parts of a .pt2 of target pair_nequip_domain with `num_layers` layers (and
// a pair potential or not), in the order of the metadata key nequip_aoti_parts
// (aotinductor.part_names).
std::vector<std::string> aoti_part_names(int64_t num_layers, bool pair_potential);

// What a layer-by-layer call found of the rows the exchange brought: whether some came in
// non-finite while this process's own were finite (checked until it happens: two passes over
// each exchange's rows, on the CPU where the exchange has them).
struct ExchangeRecord {
  bool received_non_finite = false;
};

// One layer-by-layer call on `in` (edges centered on local nodes): the model's outputs by
// field name (atomic_energy, total_energy, forces, virial, atom_virial), on the model's
// device, and what the exchange brought in `record`. A callback's exception is carried as
// CallbackFailed (torch_errors.h). `pair_potential`: the model has one (its part
// pair_energy_vjp is called too). `select_rows`: the layers compute the local nodes' outputs
// only (Metadata::layers_select_rows), a ghost's coming from its owner by the exchange.
std::map<std::string, at::Tensor> run_layered(LayeredParts& parts, const PreparedInputs& in,
                                              int64_t num_layers, bool pair_potential,
                                              bool select_rows, FeatureExchange& exchange,
                                              ExchangeRecord& record);

// A rank with no nodes at all: its part (with no rows) in each exchange a layer-by-layer call
// makes with these layer widths (one list per model run, in turn: a committee's members), and
// the outputs of no atoms (a committee's: its members' too).
Outputs exchange_nothing(const std::vector<std::vector<int64_t>>& layer_widths,
                         FeatureExchange& exchange, bool committee);

}  // namespace nequip::detail
