#include "layered.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>

#include <tuple>

#include "fields.h"
#include "output_checks.h"
#include "torch_errors.h"

namespace nequip::detail {
namespace {

// TorchScript: each layer's input features and the edge embeddings are leaves of their own,
// and the graphs of the forward pass are kept until the backward pass (nothing is computed
// twice).
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
                   const at::Tensor&, const at::Tensor&, const at::Tensor& edge_index,
                   const at::Tensor& rows) override {
    // the first layer's input is a function of the types: no gradient
    at::Tensor input = index == 0 ? x : x.detach().requires_grad_(true);
    std::vector<c10::IValue> args = {index, input, node_attrs, sh_leaf_, radial_leaf_, edge_index};
    if (rows.defined()) args.emplace_back(rows);
    at::Tensor out = call("layer", std::move(args)).toTensor();
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
                                    const at::Tensor&, const at::Tensor& grad_out) override {
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
                                const at::Tensor& grad_sh, const at::Tensor& grad_radial) override {
    at::Tensor grad = torch::autograd::grad({edge_sh_, edge_radial_}, {edge_vec_},
                                            {grad_sh, grad_radial}, /*retain_graph=*/false,
                                            /*create_graph=*/false, /*allow_unused=*/true)[0];
    return grad.defined() ? grad : at::zeros_like(edge_vec_);
  }
  std::pair<at::Tensor, at::Tensor> pair_energy_vjp(const at::Tensor& edge_vec,
                                                    const at::Tensor& atom_types,
                                                    const at::Tensor& edge_index,
                                                    const at::Tensor& local_mask) override {
    at::Tensor input = edge_vec.detach().requires_grad_(true);
    at::Tensor energy = call("pair_energy", {input, atom_types, edge_index}).toTensor();
    energy = at::where(local_mask.unsqueeze(-1), energy, at::zeros_like(energy));
    // a committee member without a pair potential: zeros, no function of the edge vectors
    if (!energy.requires_grad()) return {energy.detach(), at::zeros_like(input)};
    at::Tensor grad = torch::autograd::grad({energy.sum()}, {input}, {}, /*retain_graph=*/false,
                                            /*create_graph=*/false, /*allow_unused=*/true)[0];
    return {energy.detach(), grad.defined() ? grad : at::zeros_like(input)};
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
  explicit AotiParts(AotiLoaders& loaders) : loaders_(loaders) {}

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
                   const at::Tensor& edge_index, const at::Tensor& rows) override {
    std::vector<at::Tensor> inputs = {x, node_attrs, edge_sh, edge_radial, edge_index};
    if (rows.defined()) inputs.push_back(rows);
    // the output, then what its VJP reads (kept until the backward pass)
    std::vector<at::Tensor> out = run("layer_" + std::to_string(index), std::move(inputs));
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
                                    const at::Tensor& rows, const at::Tensor& grad_out) override {
    std::vector<at::Tensor> inputs = {x, node_attrs, edge_sh, edge_radial, edge_index};
    if (rows.defined()) inputs.push_back(rows);
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
  std::pair<at::Tensor, at::Tensor> pair_energy_vjp(const at::Tensor& edge_vec,
                                                    const at::Tensor& atom_types,
                                                    const at::Tensor& edge_index,
                                                    const at::Tensor& local_mask) override {
    std::vector<at::Tensor> out =
        run("pair_energy_vjp", {edge_vec, atom_types, edge_index, local_mask}, 2);
    return {out[0], out[1]};
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
  AotiLoaders& loaders_;
  std::vector<std::vector<at::Tensor>> residuals_;  // per layer: its output, then residuals
};

}  // namespace

std::unique_ptr<LayeredParts> torchscript_parts(torch::jit::Module& module) {
  return std::make_unique<TorchScriptParts>(module);
}

std::unique_ptr<LayeredParts> aoti_parts(AotiLoaders& loaders) {
  return std::make_unique<AotiParts>(loaders);
}

std::vector<std::string> aoti_part_names(int64_t num_layers, bool pair_potential) {
  std::vector<std::string> names = {"node_embedding", "edge_embedding"};
  for (int64_t k = 0; k < num_layers; ++k) names.push_back("layer_" + std::to_string(k));
  names.push_back("energy_readout_vjp");
  for (int64_t k = num_layers - 1; k >= 0; --k) {
    names.push_back("layer_" + std::to_string(k) + "_vjp");
  }
  names.push_back("edge_embedding_vjp");
  if (pair_potential) names.push_back("pair_energy_vjp");
  return names;
}

std::map<std::string, at::Tensor> run_layered(LayeredParts& parts, const PreparedInputs& in,
                                              int64_t num_layers, bool pair_potential,
                                              bool select_rows, FeatureExchange& exchange,
                                              ExchangeRecord& record) {
  const int64_t num_nodes = in.pos.size(0);
  const at::Tensor center = in.edge_index[0];
  const at::Tensor neighbor = in.edge_index[1];

  // The node rows of the features (N + num_types rows: after the nodes come the model's
  // reference atoms, one per type, which have no neighbors and never travel), through the
  // exchange and back.
  auto exchanged = [&](const at::Tensor& values, bool forward) {
    at::Tensor rows = values.narrow(0, 0, num_nodes).to(at::kCPU, at::kDouble).contiguous();
    const bool check = !record.received_non_finite && all_finite(rows);
    call_front_end([&] { forward ? exchange.forward(rows) : exchange.reverse(rows); });
    if (check && !all_finite(rows)) record.received_non_finite = true;
    return at::cat({rows.to(values.device(), values.scalar_type()),
                    values.narrow(0, num_nodes, values.size(0) - num_nodes)});
  };

  const at::Tensor edge_vec = in.pos.index_select(0, neighbor) - in.pos.index_select(0, center) +
                              at::matmul(in.edge_cell_shift, in.cell[0]);
  auto [node_attrs, x] = parts.node_embedding(in.atom_types);
  auto [edge_sh, edge_radial] = parts.edge_embedding(edge_vec, in.atom_types, in.edge_index);
  // Ghosts have no edges here: their features are their owners', brought by the exchange, so
  // a file that can (select_rows) computes each layer's output of the local nodes and the
  // reference atoms only (`rows`), placed back among the N + num_types rows to travel.
  at::Tensor rows, local;
  if (select_rows) {
    local = in.local_mask.nonzero().flatten();
    rows = at::cat({local, at::arange(num_nodes, x.size(0), local.options())});
  }
  auto placed = [&](const at::Tensor& out) {
    return rows.defined()
               ? at::zeros({x.size(0), out.size(1)}, out.options()).index_copy(0, rows, out)
               : out;
  };
  std::vector<at::Tensor> layer_inputs;
  for (int64_t layer = 0; layer < num_layers; ++layer) {
    layer_inputs.push_back(x);
    at::Tensor out = parts.layer(layer, x, node_attrs, edge_sh, edge_radial, in.edge_index, rows);
    x = layer + 1 < num_layers ? exchanged(placed(out), true) : out;
  }
  // the energies of the atoms the last layer computed: the local ones, or every node (0 where
  // not local)
  at::Tensor atomic_energy, gradient;
  if (!rows.defined()) {
    std::tie(atomic_energy, gradient) = parts.energy_readout_vjp(x, in.atom_types, in.local_mask);
  } else if (local.size(0) == 0) {  // a rank that owns no atom, only ghosts
    atomic_energy = at::zeros({num_nodes, 1}, x.options().dtype(at::kDouble));
    gradient = at::zeros_like(x);
  } else {
    std::tie(atomic_energy, gradient) = parts.energy_readout_vjp(
        x, in.atom_types.index_select(0, local), in.local_mask.index_select(0, local));
    atomic_energy =
        at::zeros({num_nodes, 1}, atomic_energy.options()).index_copy(0, local, atomic_energy);
  }
  at::Tensor sh_gradient = at::zeros_like(edge_sh);
  at::Tensor radial_gradient = at::zeros_like(edge_radial);
  for (int64_t layer = num_layers - 1; layer >= 0; --layer) {
    std::vector<at::Tensor> grads = parts.layer_vjp(layer, layer_inputs[layer], node_attrs, edge_sh,
                                                    edge_radial, in.edge_index, rows, gradient);
    sh_gradient += grads[0];
    radial_gradient += grads[1];
    if (layer > 0) {
      gradient = exchanged(grads[2], false);
      if (rows.defined()) gradient = gradient.index_select(0, rows);
    }
  }
  at::Tensor edge_grad = parts.edge_embedding_vjp(edge_vec, in.atom_types, in.edge_index,
                                                  sh_gradient, radial_gradient);
  if (pair_potential) {
    // the pair energy (ZBL) reads only the edge vectors: no exchange
    auto [pair_energy, pair_gradient] =
        parts.pair_energy_vjp(edge_vec, in.atom_types, in.edge_index, in.local_mask);
    atomic_energy = atomic_energy + pair_energy;
    edge_grad = edge_grad + pair_gradient;
  }

  // forces and virials from dE/d(edge vector), as NequIPModel._energy_and_derivatives
  const at::Tensor forces = at::zeros({num_nodes, 3}, edge_grad.options())
                                .index_add(0, center, edge_grad)
                                .index_add(0, neighbor, edge_grad, -1.0);
  const at::Tensor outer = edge_vec.unsqueeze(-1) * edge_grad.unsqueeze(-2);
  const at::Tensor edge_virial = -0.5 * (outer + outer.transpose(-1, -2));
  const at::Tensor half = 0.5 * edge_virial;
  const at::Tensor atom_virial = at::zeros({num_nodes, 3, 3}, edge_virial.options())
                                     .index_add(0, center, half)
                                     .index_add(0, neighbor, half);
  return {{kAtomicEnergy, atomic_energy},
          {kTotalEnergy, atomic_energy.sum().reshape({1})},
          {kForces, forces},
          {kVirial, edge_virial.sum(0)},
          {kAtomVirial, atom_virial}};
}

Outputs exchange_nothing(const std::vector<std::vector<int64_t>>& layer_widths,
                         FeatureExchange& exchange, bool committee) {
  const auto f64 = at::TensorOptions(at::kDouble);
  for (const std::vector<int64_t>& widths : layer_widths) {
    for (size_t layer = 0; layer + 1 < widths.size(); ++layer) {
      at::Tensor rows = at::zeros({0, widths[layer]}, f64);
      call_front_end([&] { exchange.forward(rows); });
    }
    for (size_t layer = widths.size() - 1; layer-- > 0;) {
      at::Tensor rows = at::zeros({0, widths[layer]}, f64);
      call_front_end([&] { exchange.reverse(rows); });
    }
  }
  Outputs outputs;
  if (committee) {
    const int64_t size = static_cast<int64_t>(layer_widths.size());
    outputs.member_forces = at::zeros({size, 0, 3}, f64);
    outputs.member_energies = at::zeros({size}, f64);
    outputs.member_virials = at::zeros({size, 3, 3}, f64);
  }
  outputs.atomic_energy = at::zeros({0}, f64);
  outputs.forces = at::zeros({0, 3}, f64);
  outputs.virial = at::zeros({3, 3}, f64);
  outputs.atom_virial = at::zeros({0, 3, 3}, f64);
  return outputs;
}

}  // namespace nequip::detail
