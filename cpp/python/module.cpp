// nequip._runtime: the Python front end of the C++ runtime (cpp/include/nequip/runtime.h).
//
// numpy arrays go in and come out; tensors exist only on the C++ side, so this module links
// libtorch but not libtorch_python. Input arrays are wrapped without copying, keeping their
// dtype and strides: the runtime itself converts dtype, layout and device.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <ATen/ATen.h>

#include <cstring>
#include <memory>
#include <optional>
#include <string>

#include "nequip/runtime.h"

namespace py = pybind11;

namespace {

at::ScalarType scalar_type_of(const py::array& array, const char* name) {
  const py::dtype dtype = array.dtype();
  const char kind = dtype.kind();
  const auto size = dtype.itemsize();
  if (kind == 'f' && size == 8) return at::kDouble;
  if (kind == 'f' && size == 4) return at::kFloat;
  if (kind == 'i' && size == 8) return at::kLong;
  if (kind == 'i' && size == 4) return at::kInt;
  throw nequip::InputError(std::string(name) +
                           " must be an array of float64, float32, int64 "
                           "or int32, got " +
                           py::str(dtype).cast<std::string>());
}

// A CPU tensor viewing the array's memory; the array must outlive the tensor's use.
at::Tensor as_tensor(const py::array& array, const char* name) {
  const at::ScalarType scalar_type = scalar_type_of(array, name);
  if (!array.dtype().attr("isnative").cast<bool>()) {
    throw nequip::InputError(std::string(name) + " must be in native byte order");
  }
  std::vector<int64_t> sizes(array.shape(), array.shape() + array.ndim());
  std::vector<int64_t> strides;
  for (py::ssize_t d = 0; d < array.ndim(); ++d) {
    if (array.strides(d) < 0 || array.strides(d) % array.itemsize() != 0) {
      // Not expressible as a tensor view (torch has no negative strides): copy.
      py::array copy = py::array::ensure(array, py::array::c_style);
      return as_tensor(copy, name).clone();
    }
    strides.push_back(array.strides(d) / array.itemsize());
  }
  return at::from_blob(const_cast<void*>(array.data()), sizes, strides,
                       at::TensorOptions().dtype(scalar_type));
}

at::Tensor optional_tensor(const std::optional<py::array>& array, const char* name) {
  return array ? as_tensor(*array, name) : at::Tensor();
}

// A mask of bools or integers (nonzero = true), copied into a bool tensor. Copied because
// numpy bools and torch bools need not share a representation, and masks are small.
at::Tensor mask_tensor(const std::optional<py::array>& array, const char* name) {
  if (!array) return at::Tensor();
  const py::dtype dtype = array->dtype();
  const char kind = dtype.kind();
  if (kind != 'b' && kind != 'i' && kind != 'u') {
    throw nequip::InputError(std::string(name) + " must be an array of bool or integers, got " +
                             py::str(dtype).cast<std::string>());
  }
  py::array_t<bool, py::array::c_style | py::array::forcecast> as_bool(
      py::module_::import("numpy").attr("not_equal")(*array, 0));
  std::vector<int64_t> sizes(as_bool.shape(), as_bool.shape() + as_bool.ndim());
  at::Tensor mask = at::empty(sizes, at::TensorOptions().dtype(at::kBool));
  std::memcpy(mask.data_ptr<bool>(), as_bool.data(), sizeof(bool) * as_bool.size());
  return mask;
}

// A numpy copy of a float64 CPU tensor (the runtime's outputs are always such).
py::array_t<double> to_numpy(const at::Tensor& tensor) {
  std::vector<py::ssize_t> shape(tensor.sizes().begin(), tensor.sizes().end());
  py::array_t<double> array(shape);
  at::Tensor contiguous = tensor.contiguous();
  std::memcpy(array.mutable_data(), contiguous.data_ptr<double>(),
              sizeof(double) * static_cast<size_t>(contiguous.numel()));
  return array;
}

py::dict outputs_to_dict(const nequip::Model& model, const nequip::Outputs& outputs);

py::dict compute(nequip::Model& model, const py::array& pos, const py::array& atom_types,
                 const py::array& edge_index, const std::optional<py::array>& edge_cell_shift,
                 const std::optional<py::array>& cell, const std::optional<py::array>& local_mask) {
  nequip::Inputs inputs{as_tensor(pos, "pos"),
                        as_tensor(atom_types, "atom_types"),
                        as_tensor(edge_index, "edge_index"),
                        optional_tensor(edge_cell_shift, "edge_cell_shift"),
                        optional_tensor(cell, "cell"),
                        mask_tensor(local_mask, "local_mask")};
  nequip::Outputs outputs;
  {
    py::gil_scoped_release release;  // the arrays are kept alive by the caller's references
    outputs = model.compute(inputs);
  }
  return outputs_to_dict(model, outputs);
}

py::dict outputs_to_dict(const nequip::Model& model, const nequip::Outputs& outputs) {
  // atoms closer than the model can be trusted at: the runtime reports them once per model
  if (outputs.close_pair) {
    const std::string message = outputs.close_pair->message(model.path());
    const py::object category = py::module_::import("nequip._runtime").attr("CloseAtomsWarning");
    if (PyErr_WarnEx(category.ptr(), message.c_str(), 1) != 0) throw py::error_already_set();
  }
  py::dict result;
  result["total_energy"] = outputs.total_energy;
  result["atomic_energy"] = to_numpy(outputs.atomic_energy);
  result["forces"] = to_numpy(outputs.forces);
  if (outputs.virial) result["virial"] = to_numpy(*outputs.virial);
  if (outputs.stress) result["stress"] = to_numpy(*outputs.stress);
  if (outputs.atom_virial) result["atom_virial"] = to_numpy(*outputs.atom_virial);
  if (outputs.force_deviation) result["force_deviation"] = to_numpy(*outputs.force_deviation);
  if (outputs.energy_deviation) result["energy_deviation"] = *outputs.energy_deviation;
  if (outputs.virial_deviation) result["virial_deviation"] = to_numpy(*outputs.virial_deviation);
  if (outputs.member_forces) result["member_forces"] = to_numpy(*outputs.member_forces);
  if (outputs.member_energies) result["member_energies"] = to_numpy(*outputs.member_energies);
  if (outputs.member_virials) result["member_virials"] = to_numpy(*outputs.member_virials);
  return result;
}

py::dict compute_batch(nequip::Model& model, const py::array& pos, const py::array& atom_types,
                       const py::array& edge_index, const py::array& batch,
                       const py::array& num_atoms, const std::optional<py::array>& edge_cell_shift,
                       const std::optional<py::array>& cell) {
  nequip::BatchInputs inputs{as_tensor(pos, "pos"),
                             as_tensor(atom_types, "atom_types"),
                             as_tensor(edge_index, "edge_index"),
                             optional_tensor(edge_cell_shift, "edge_cell_shift"),
                             optional_tensor(cell, "cell"),
                             as_tensor(batch, "batch"),
                             as_tensor(num_atoms, "num_atoms")};
  nequip::BatchOutputs outputs;
  {
    py::gil_scoped_release release;  // the arrays are kept alive by the caller's references
    outputs = model.compute_batch(inputs);
  }
  py::dict result;
  result["total_energy"] = to_numpy(outputs.total_energy);
  result["atomic_energy"] = to_numpy(outputs.atomic_energy);
  result["forces"] = to_numpy(outputs.forces);
  if (outputs.virial) result["virial"] = to_numpy(*outputs.virial);
  if (outputs.stress) result["stress"] = to_numpy(*outputs.stress);
  if (outputs.atom_virial) result["atom_virial"] = to_numpy(*outputs.atom_virial);
  return result;
}

// The exchange of one process whose ghost nodes are copies of its own nodes (the periodic
// images a single LAMMPS rank sees): owner[n] is the node that node n copies (n itself for
// an owned node).
class OwnerExchange : public nequip::FeatureExchange {
 public:
  explicit OwnerExchange(at::Tensor owner) : owner_(std::move(owner)) {
    ghost_ = owner_ != at::arange(owner_.size(0), owner_.options());
  }
  void forward(at::Tensor& features) override { features.copy_(features.index_select(0, owner_)); }
  void reverse(at::Tensor& gradients) override {
    const at::Tensor ghosts = gradients * ghost_.unsqueeze(-1).to(gradients.scalar_type());
    gradients.index_add_(0, owner_, ghosts);
    gradients.masked_fill_(ghost_.unsqueeze(-1), 0.0);
  }

 private:
  at::Tensor owner_, ghost_;
};

// An exchange written in Python: `exchange.forward(rows)` and `exchange.reverse(rows)` change
// a (N, width) float64 array in place (a view of the runtime's rows). What they raise reaches
// the caller of compute_exchanging unchanged.
class PythonExchange : public nequip::FeatureExchange {
 public:
  explicit PythonExchange(py::object exchange) : exchange_(std::move(exchange)) {}
  void forward(at::Tensor& features) override { call("forward", features); }
  void reverse(at::Tensor& gradients) override { call("reverse", gradients); }

 private:
  void call(const char* method, at::Tensor& rows) {
    py::gil_scoped_acquire gil;
    // a view: the capsule (which frees nothing) stands for the tensor, which outlives the call
    py::array_t<double> view({rows.size(0), rows.size(1)}, rows.data_ptr<double>(),
                             py::capsule(rows.data_ptr<double>(), [](void*) {}));
    exchange_.attr(method)(view);
  }
  py::object exchange_;
};

py::dict compute_exchanging(nequip::Model& model, const py::array& pos, const py::array& atom_types,
                            const py::array& edge_index, const py::array& owner,
                            const std::optional<py::array>& cell,
                            const std::optional<py::array>& edge_cell_shift,
                            const py::object& exchange) {
  const at::Tensor owner_index = as_tensor(owner, "owner").to(at::kLong).contiguous();
  const int64_t num_nodes = owner_index.size(0);
  if (owner_index.dim() != 1 || num_nodes != static_cast<int64_t>(pos.shape(0))) {
    throw nequip::InputError("owner must have shape (N,), one owner node per node");
  }
  if (num_nodes > 0 &&
      (owner_index.min().item<int64_t>() < 0 || owner_index.max().item<int64_t>() >= num_nodes)) {
    throw nequip::InputError("owner holds a node index outside [0, N)");
  }
  const at::Tensor own = at::arange(num_nodes, owner_index.options());
  if (!owner_index.index_select(0, owner_index).equal(owner_index)) {
    throw nequip::InputError("owner: an owner node must be owned (its own owner)");
  }
  nequip::Inputs inputs{as_tensor(pos, "pos"),
                        as_tensor(atom_types, "atom_types"),
                        as_tensor(edge_index, "edge_index"),
                        optional_tensor(edge_cell_shift, "edge_cell_shift"),
                        optional_tensor(cell, "cell"),
                        owner_index == own};
  OwnerExchange owner_exchange(owner_index);
  PythonExchange python_exchange(exchange);
  nequip::FeatureExchange& used = exchange.is_none()
                                      ? static_cast<nequip::FeatureExchange&>(owner_exchange)
                                      : static_cast<nequip::FeatureExchange&>(python_exchange);
  nequip::Outputs outputs;
  {
    py::gil_scoped_release release;
    outputs = model.compute_exchanging(inputs, used);
  }
  return outputs_to_dict(model, outputs);
}

py::dict metadata_dict(const nequip::Metadata& metadata) {
  py::dict result;
  result["model_dtype"] = metadata.model_dtype;
  result["type_names"] = metadata.type_names;
  result["num_types"] = metadata.num_types;
  result["r_max"] = metadata.r_max;
  result["per_edge_type_cutoff"] = metadata.per_edge_type_cutoff.empty()
                                       ? py::object(py::none())
                                       : py::cast(metadata.per_edge_type_cutoff);
  result["allow_tf32"] = metadata.allow_tf32;
  result["num_layers"] =
      metadata.num_layers == 0 ? py::object(py::none()) : py::cast(metadata.num_layers);
  result["committee_size"] = metadata.committee_size;
  result["compiled_for"] =
      metadata.compiled_for.empty() ? py::object(py::none()) : py::cast(metadata.compiled_for);
  result["raw"] = metadata.raw;
  return result;
}

}  // namespace

PYBIND11_MODULE(_runtime, m) {
  m.doc() = "The NequIP C++ runtime: load and evaluate compiled models (.nequip.pth, .nequip.pt2).";

  // Base first: pybind11 tries the most recently registered translator first. Every class
  // derives from Error (a RuntimeError), so `except Error` catches all the runtime raises;
  // the errors of a bad argument (file, device, inputs) are ValueErrors as well.
  const py::object error = py::register_exception<nequip::Error>(m, "Error", PyExc_RuntimeError);
  const py::tuple error_and_value_error = py::make_tuple(error, py::handle(PyExc_ValueError));
  py::register_exception<nequip::TorchError>(m, "TorchError", error);
  py::register_exception<nequip::ModelFileError>(m, "ModelFileError", error_and_value_error);
  py::register_exception<nequip::DeviceError>(m, "DeviceError", error_and_value_error);
  py::register_exception<nequip::InputError>(m, "InputError", error_and_value_error);
  // Raised after the model ran: the energy or forces are NaN or infinite (the message names
  // overlapping atoms when they are the likely cause). A RuntimeError, not a ValueError: the
  // inputs passed every check.
  py::register_exception<nequip::NonFiniteOutputError>(m, "NonFiniteOutputError", error);
  // What loading found that does not stop the model from running (Model.warnings).
  const py::object warning = py::reinterpret_steal<py::object>(PyErr_NewExceptionWithDoc(
      "nequip._runtime.ModelFileWarning",
      "A compiled file loads, but something about it may be wrong (e.g. another torch minor "
      "version).",
      PyExc_UserWarning, nullptr));
  m.attr("ModelFileWarning") = warning;
  // Atoms closer than the model can be trusted at (close_pair_warning): once per model.
  m.attr("CloseAtomsWarning") = py::reinterpret_steal<py::object>(PyErr_NewExceptionWithDoc(
      "nequip._runtime.CloseAtomsWarning",
      "Two atoms are closer than any pair the model was trained on (or than 0.1 * r_max): its "
      "energy and forces there are extrapolations.",
      PyExc_UserWarning, nullptr));

  py::class_<nequip::Model> model_class(m, "Model", R"doc(
A compiled NequIP model (.nequip.pth TorchScript or .nequip.pt2 AOTInductor) on one device.

Model(path, device=None): the format is chosen by the extension and confirmed by content;
device "cpu", "cuda" or "cuda:k", None = the device the file was compiled for.
Raises ModelFileError (bad file or metadata, a .pt2 of another torch major version),
DeviceError (another device, or a .pt2 for another machine or CPU), TorchError; warns
(ModelFileWarning) of a .pt2 of another torch minor version.
)doc");
  model_class
      .def(py::init([warning](const std::string& path, const std::optional<std::string>& device) {
             auto model = std::make_unique<nequip::Model>(path, device.value_or(""));
             // Shown once per load, through Python's warnings (filters apply).
             for (const std::string& message : model->warnings()) {
               if (PyErr_WarnEx(warning.ptr(), message.c_str(), 1) != 0) {
                 throw py::error_already_set();
               }
             }
             return model;
           }),
           py::arg("path"), py::arg("device") = std::nullopt)
      .def_property_readonly("path", &nequip::Model::path)
      .def_property_readonly("format",
                             [](const nequip::Model& model) {
                               return model.format() == nequip::ModelFormat::TorchScript
                                          ? "torchscript"
                                          : "aotinductor";
                             })
      .def_property_readonly("device",
                             [](const nequip::Model& model) { return model.device().str(); })
      .def_property_readonly("type_names", &nequip::Model::type_names)
      .def_property_readonly("num_types", &nequip::Model::num_types)
      .def_property_readonly("r_max", &nequip::Model::r_max)
      .def_property_readonly(
          "per_edge_type_cutoff",
          [](const nequip::Model& model) -> std::optional<py::array_t<double>> {
            const std::vector<double>& cutoffs = model.per_edge_type_cutoff();
            if (cutoffs.empty()) return std::nullopt;
            const py::ssize_t t = model.num_types();
            py::array_t<double> array({t, t});
            std::memcpy(array.mutable_data(), cutoffs.data(), sizeof(double) * cutoffs.size());
            return array;
          },
          "(num_types, num_types) cutoffs (row = center type), or None when r_max is used "
          "for every pair")
      .def_property_readonly("model_dtype", &nequip::Model::model_dtype)
      .def_property_readonly(
          "num_layers",
          [](const nequip::Model& model) -> std::optional<int64_t> {
            if (model.num_layers() == 0) return std::nullopt;
            return model.num_layers();
          },
          "message-passing layers (metadata key num_layers), or None when the file does not say")
      .def_property_readonly("committee_size", &nequip::Model::committee_size,
                             "the number of models of a committee file (metadata key "
                             "committee_size); 1 for one model")
      .def_property_readonly("input_names", &nequip::Model::input_names,
                             "the fields the model takes; 'local_mask' is optional")
      .def_property_readonly("output_names", &nequip::Model::output_names)
      .def_property_readonly(
          "metadata", [](const nequip::Model& model) { return model.metadata().raw; },
          "every metadata key of the file, as stored")
      .def_property_readonly("warnings", &nequip::Model::warnings,
                             "what loading found that does not stop the model from running "
                             "(each also issued as a ModelFileWarning when loading)")
      .def("compute", &compute, py::arg("pos"), py::arg("atom_types"), py::arg("edge_index"),
           py::arg("edge_cell_shift") = std::nullopt, py::arg("cell") = std::nullopt,
           py::arg("local_mask") = std::nullopt,
           R"doc(
Evaluates one frame. pos (N, 3), atom_types (N,), edge_index (2, E), edge_cell_shift (E, 3),
cell (3, 3); float64/float32/int64/int32 arrays of any strides (converted by the runtime).
local_mask (N,) bool or integer (nonzero = true): the atoms whose energy is counted, for
models with 'local_mask' among input_names (InputError for others); None = every atom.
Returns a dict: total_energy (float), atomic_energy (N,), forces (N, 3), and, when
available, virial (3, 3), stress (3, 3) (ASE sign) and atom_virial (N, 3, 3), all float64;
a committee file (committee_size > 1) also gives force_deviation (N,), energy_deviation
(float) and, when available, virial_deviation (3, 3).
Raises InputError for bad inputs, NonFiniteOutputError when the energy or forces are not
finite (naming the closest pair of atoms when they overlap), TorchError when torch fails.
)doc");

  model_class.def_property_readonly(
      "close_pair_threshold", &nequip::Model::close_pair_threshold,
      "how close two atoms may come before the model's results are extrapolation (Å): the "
      "metadata's closest_training_pair, else 0.1 * r_max; a call that finds a closer pair "
      "warns (CloseAtomsWarning), once per model");

  model_class.def_property_readonly("takes_batches", &nequip::Model::takes_batches,
                                    "whether the file evaluates several frames per call "
                                    "(compute_batch): target batch, our .pth files");
  model_class.def("compute_batch", &compute_batch, py::arg("pos"), py::arg("atom_types"),
                  py::arg("edge_index"), py::arg("batch"), py::arg("num_atoms"),
                  py::arg("edge_cell_shift") = std::nullopt, py::arg("cell") = std::nullopt,
                  R"doc(
Evaluates F frames in one call: their atoms one after another, pos (N, 3), atom_types (N,),
edge_index (2, E) (no edge between two frames), edge_cell_shift (E, 3), cell (F, 3, 3) (zero
for a non-periodic frame), batch (N,) the frame of each atom (sorted), num_atoms (F,) the atoms
of each frame (summing to N); arrays as compute() takes them.
Returns a dict: total_energy (F,), atomic_energy (N,), forces (N, 3), and, when the file gives
either, virial and stress (F, 3, 3), the stress NaN for each frame without a cell volume, and
atom_virial (N, 3, 3) where the file gives it; all float64. Raises InputError for bad inputs or a file that takes one frame per call
(takes_batches), NonFiniteOutputError, TorchError, as compute().
)doc");

  model_class.def_property_readonly("exchanges_features", &nequip::Model::exchanges_features,
                                    "whether the file runs layer by layer with a feature "
                                    "exchange (compute_exchanging; LAMMPS on several ranks)");
  model_class.def("compute_exchanging", &compute_exchanging, py::arg("pos"), py::arg("atom_types"),
                  py::arg("edge_index"), py::arg("owner"), py::arg("cell") = std::nullopt,
                  py::arg("edge_cell_shift") = std::nullopt, py::arg("exchange") = py::none(),
                  R"doc(
Evaluates one frame layer by layer, as one LAMMPS rank of a domain decomposition does, on
nodes that include ghost copies of other nodes (periodic images, at their images' positions):
owner (N,) integers, the node each node copies (itself for an owned node). Edges are centered
on owned nodes only. Between layers the ghosts get their owners' features, and in the backward
pass their gradients go back to the owners. Returns what compute() does, with forces on
ghosts (to be added to their owners') and zero energies on them. edge_cell_shift (E, 3), as
in compute(), lets an edge reach a periodic image without a ghost node (owner = arange(N):
the whole frame on one process, layer by layer).
exchange: None (ghosts copy their owners, as above), or an object whose forward(rows) and
reverse(rows) change a (N, width) float64 array in place between layers, as a front end's
exchange does (nequip::FeatureExchange); what they raise reaches the caller unchanged.
)doc");

  m.def(
      "read_metadata",
      [](const std::string& path) { return metadata_dict(nequip::read_metadata(path)); },
      py::arg("path"), R"doc(
The checked metadata of a .nequip.pth / .nequip.pt2 file, without loading its model: a dict
of model_dtype, type_names (list), num_types, r_max, per_edge_type_cutoff (num_types**2
floats, row-major, or None), allow_tf32, num_layers (or None), compiled_for ("cpu", "cuda",
or None when the file does not say) and raw (every key as stored).
Raises ModelFileError for a bad file or metadata.
)doc");

  m.def(
      "check_finite_outputs",
      [](const std::string& path, double r_max, const py::array& pos, const py::array& edge_index,
         const std::optional<py::array>& edge_cell_shift, const std::optional<py::array>& cell,
         const py::array& atomic_energy, const py::array& forces) {
        nequip::Inputs frame;
        frame.pos = as_tensor(pos, "pos");
        frame.edge_index = as_tensor(edge_index, "edge_index");
        frame.edge_cell_shift = optional_tensor(edge_cell_shift, "edge_cell_shift");
        frame.cell = optional_tensor(cell, "cell");
        nequip::check_finite_outputs(path, r_max, frame, as_tensor(atomic_energy, "atomic_energy"),
                                     as_tensor(forces, "forces"));
      },
      py::arg("path"), py::arg("r_max"), py::arg("pos"), py::arg("edge_index"),
      py::arg("edge_cell_shift"), py::arg("cell"), py::arg("atomic_energy"), py::arg("forces"),
      R"doc(
The runtime's check of a call's outputs, for models it does not run (eager models): raises
NonFiniteOutputError, naming the closest two atoms, when atomic_energy or forces hold a NaN or
an infinity. edge_cell_shift and cell may be None (a non-periodic frame).
)doc");
  m.def(
      "close_pair_warning",
      [](const std::string& path, const std::map<std::string, std::string>& metadata,
         const py::array& pos, const py::array& edge_index,
         const std::optional<py::array>& edge_cell_shift, const std::optional<py::array>& cell) {
        nequip::Inputs frame;
        frame.pos = as_tensor(pos, "pos");
        frame.edge_index = as_tensor(edge_index, "edge_index");
        frame.edge_cell_shift = optional_tensor(edge_cell_shift, "edge_cell_shift");
        frame.cell = optional_tensor(cell, "cell");
        return nequip::close_pair_warning(path, metadata, frame);
      },
      py::arg("path"), py::arg("metadata"), py::arg("pos"), py::arg("edge_index"),
      py::arg("edge_cell_shift"), py::arg("cell"), R"doc(
The warning (a str) when the closest two atoms of the frame are closer than the model can be
trusted at (its metadata's closest_training_pair, else 0.1 * r_max), else None.
)doc");
  m.def(
      "close_pair_threshold",
      [](const std::map<std::string, std::string>& metadata, const std::string& source) {
        return nequip::close_pair_threshold(source, metadata);
      },
      py::arg("metadata"), py::arg("source") = "the model", R"doc(
How close two atoms may come before the results of a model with this metadata (a dict of
strings; r_max and closest_training_pair are read) are extrapolation, in Å: closest_training_pair
when the model records it, else 0.1 * r_max. Raises ModelFileError, naming `source`, for a
malformed value.
)doc");
  m.def(
      "check_metadata",
      [](const std::map<std::string, std::string>& metadata, const std::string& source) {
        return metadata_dict(nequip::check_metadata(source, metadata));
      },
      py::arg("metadata"), py::arg("source") = "the model", R"doc(
Metadata (a dict of strings) parsed and checked as the runtime reads a file's: the one check of
FILE_CONTRACT §2 and the project's keys (the compiler asks it before writing a file). Returns
what read_metadata does; raises ModelFileError, its message naming `source` and the key.
)doc");

  m.attr("CONTENT_HASH_RECORD") = nequip::kContentHashRecord;
  m.def("content_hash", &nequip::content_hash, py::arg("path"), R"doc(
The content hash nequip-compile records in a compiled file (record nequip/content_hash):
"sha256:" and the SHA-256 of every other record of the archive (docs/files.md). Raises
ModelFileError for a file the runtime refuses (a record that fails its zip checksum among them).
)doc");

  m.def("select_device", &nequip::select_device, py::arg("requested"), py::arg("compiled_for"),
        py::arg("local_rank"), py::arg("num_cuda_devices"), R"doc(
The device a front end opens a file on: requested ("" = the file's compiled_for, or "cpu"
when that is empty; else "cpu", "cuda", "cuda:k"); a "cuda" without an index becomes
"cuda:(local_rank % num_cuda_devices)" (LAMMPS: one GPU per rank of a node). Raises
DeviceError for a malformed name, or "cuda" with no CUDA device.
)doc");
  m.def("parse_device", &nequip::parse_device, py::arg("name"), py::arg("on_this_machine") = true,
        R"doc(
The device a name ("cpu", "cuda", "cuda:k") names: the project's one parser of device names.
on_this_machine: checked against this machine and returned by its canonical name ("cpu",
"cuda:k"; "cuda" is "cuda:0"); else the name only is checked, and returned as given.
Raises DeviceError (a ValueError) for a malformed name or a device this machine lacks.
)doc");
  m.def("cuda_device_count", &nequip::cuda_device_count,
        "CUDA devices visible to torch in this process (0 with a CPU-only torch).");
  m.def("set_num_threads", &nequip::set_num_threads, py::arg("num_threads"),
        "Number of intra-op threads torch uses in this process.");
}
