// The NequIP C++ runtime: load a compiled model (`*.nequip.pth` or `*.nequip.pt2`),
// read and check its metadata, and evaluate it on one frame.
//
// This is the only interface through which the front ends (the pybind11 module
// `nequip._runtime` and the LAMMPS pair style) reach torch. It knows nothing of
// Python. File formats are specified in FILE_CONTRACT.md (§2 metadata, §3 TorchScript,
// §4 AOTInductor).
//
//   nequip::Model model("model.nequip.pt2", "cpu");
//   nequip::Inputs inputs{pos, atom_types, edge_index, edge_cell_shift, cell};
//   nequip::Outputs out = model.compute(inputs);
//   double e = out.total_energy;              // eV
//   at::Tensor f = out.forces;                // (N, 3) float64, CPU
//   if (out.virial) { /* (3, 3) float64, CPU */ }
//
// Domain decomposition (LAMMPS on several MPI ranks): a model whose input_names() include
// "local_mask" counts the energy of the atoms marked local only, and still returns forces on
// every atom (the non-local ones are the ghosts whose forces LAMMPS sends back to their
// owners); "atom_virial" among output_names() gives per-atom virials.
//
// Every failure, including those raised inside torch, surfaces as a subclass of
// nequip::Error (itself a std::runtime_error) with a message a user can act on. An exception
// thrown by a front end's own callback (FeatureExchange) reaches it unchanged.
//
// The implementation, one concept per file under cpp/src/: archive (reading the zip archive:
// format, records, metadata as stored), metadata (parsing and checking it), compatibility
// (machine, torch version, devices), inputs (checking and converting a frame), layered (the
// layer-by-layer evaluation and its exchange), output_checks (what is checked of the outputs),
// model (the Model class: loading and calls), batch (the inputs and outputs of a batch of
// frames), call_memory (a call's large buffers).
#pragma once

#include <ATen/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace nequip {

// Base class of every exception thrown by the runtime.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The file cannot be used: missing, not a compiled NequIP model, wrong format for its
// extension, or missing / malformed metadata. The message names the file (and the key).
class ModelFileError : public Error {
 public:
  using Error::Error;
};

// The requested device is malformed, unavailable, or not the one a `.pt2` was compiled for.
class DeviceError : public Error {
 public:
  using Error::Error;
};

// The inputs of `Model::compute` have wrong shapes, non-finite values, or out-of-range indices.
class InputError : public Error {
 public:
  using Error::Error;
};

// An error raised by torch while loading or running the model, converted to a readable message.
class TorchError : public Error {
 public:
  using Error::Error;
};

// The model gave a non-finite total energy, atomic energy or force for finite inputs (checked
// after every call: one pass over N * 3 values). The message names the likely cause: when the
// closest pair of atoms over the edges given (edge vectors pos[j] - pos[i] + shift . cell) is
// closer than kOverlapFraction * r_max, those atoms overlap ("check the structure"); in a
// layer-by-layer call whose exchange brought non-finite features, the cause is another rank's
// (which reports its own); otherwise the model itself is broken (its weights may be
// non-finite: "check the file").
class NonFiniteOutputError : public Error {
 public:
  // Two atoms closer than this fraction of r_max are taken for overlapping atoms: far below
  // any bond length a model is trained on (0.5 Å for r_max = 5 Å).
  static constexpr double kOverlapFraction = 0.1;

  struct ClosestPair {
    int64_t first;    // index into Inputs::pos: the center of the shortest edge
    int64_t second;   // its neighbor
    double distance;  // Å
  };

  // `closest`: the shortest edge's atoms and length; empty when no edges were given.
  // `received_non_finite`: in a layer-by-layer call (Model::compute_exchanging), node features
  // or their gradients came in non-finite through the FeatureExchange while this process's own
  // were finite: the cause is another rank's, and the message says so (unless its own atoms
  // overlap as well).
  NonFiniteOutputError(const std::string& path, double r_max, std::optional<ClosestPair> closest,
                       bool received_non_finite = false);

  const std::optional<ClosestPair>& closest_pair() const { return closest_; }
  bool received_non_finite() const { return received_non_finite_; }
  // Whether the closest pair is closer than kOverlapFraction * r_max.
  bool atoms_overlap() const;
  // The message with the closest pair named by `pair` instead of "atoms I and J" (indices
  // into Inputs::pos): front ends that number atoms otherwise (LAMMPS atom IDs) use this.
  std::string message(const std::string& pair) const;

 private:
  std::string path_;
  double r_max_;
  std::optional<ClosestPair> closest_;
  bool received_non_finite_ = false;
};

// Two atoms closer than a model can be trusted at (Model::close_pair_threshold): closer than
// the closest pair of its training data, or than NonFiniteOutputError::kOverlapFraction * r_max
// for a model that does not record it. Its energy and forces there are extrapolation; the front
// ends warn (Python: a CloseAtomsWarning once per model; LAMMPS: once per run).
struct ClosePair {
  NonFiniteOutputError::ClosestPair atoms;  // indices into Inputs::pos, and their distance
  double threshold = 0.0;                   // Å
  bool from_training_data = false;          // threshold is the key closest_training_pair
  // The warning, naming the atoms `pair` ("" = "atoms I and J", indices into Inputs::pos) and
  // saying how often it is given ("once per model", "once per run").
  std::string message(const std::string& path, const std::string& pair = "",
                      const std::string& how_often = "once per model") const;
};

enum class ModelFormat {
  TorchScript,  // *.nequip.pth
  AOTInductor,  // *.nequip.pt2
};

// The metadata of FILE_CONTRACT §2, parsed and checked.
struct Metadata {
  std::string model_dtype;              // "float32" or "float64"
  std::vector<std::string> type_names;  // model type order; size() == num_types
  int64_t num_types = 0;
  double r_max = 0.0;
  // num_types * num_types cutoffs, row-major (row = center type, column = neighbor type);
  // empty when the model uses r_max for every pair.
  std::vector<double> per_edge_type_cutoff;
  bool allow_tf32 = false;
  // Project key `num_layers`: message-passing layers, so an atom's energy depends only on
  // atoms within num_layers * r_max (what a domain decomposition needs). 0 when absent.
  int64_t num_layers = 0;
  // Project key `layer_feature_widths`: the width of the node features out of each of the
  // num_layers layers; empty when absent (the file cannot exchange features, see
  // Model::compute_exchanging).
  std::vector<int64_t> layer_feature_widths;
  // Project key `closest_training_pair`: the distance of the closest two atoms of the data the
  // model was trained on (Å); 0 when absent (files of other producers and older ones).
  double closest_training_pair = 0.0;
  // Project key `pair_potential`: the pair energy added to the learned one ("zbl"); empty when
  // absent. A layer-by-layer evaluation then runs the model's part pair_energy as well.
  std::string pair_potential;
  // Project key `layer_rows` = "selected": the layer parts (a .pt2's layer_k and layer_k_vjp,
  // a .pth's method `layer`) take one more input, the rows whose output they compute (a
  // layer-by-layer call: the local nodes and the reference atoms). Absent (older files): they
  // compute every node's.
  bool layers_select_rows = false;
  // The device type the file was compiled for, "cpu" or "cuda" (a .pt2: torch's key
  // AOTI_DEVICE_KEY; a .pth: our key compile_device); empty when the file does not say.
  std::string compiled_for;
  // Project key `committee_size`: the number of models of a committee file (at least 2),
  // which returns their mean and deviations (Outputs::force_deviation ...); 1 when absent
  // (one model).
  int64_t committee_size = 1;
  // Project key `committee_layer_feature_widths`: a committee file's members' own
  // layer_feature_widths (member k has committee_layer_feature_widths[k].size() layers); empty
  // when absent (the committee cannot exchange features, see Model::compute_exchanging).
  std::vector<std::vector<int64_t>> committee_layer_feature_widths;
  // Every key of the file as stored (contract keys, project keys, torch's own AOTI keys).
  std::map<std::string, std::string> raw;
};

// One frame. Tensors may have any floating / integer dtype, any device and any strides:
// the runtime converts them (float64 positions, cell and shifts; int64 indices; contiguous;
// on the model's device) before every call, because compiled AOTI models check nothing.
struct Inputs {
  at::Tensor pos;              // (N, 3), Å
  at::Tensor atom_types;       // (N,), values in [0, num_types)
  at::Tensor edge_index;       // (2, E), row 0 = center i, row 1 = neighbor j, values in [0, N)
  at::Tensor edge_cell_shift;  // (E, 3), integer-valued image shifts; undefined = all zero
  at::Tensor cell;             // (3, 3) or (1, 3, 3), rows = lattice vectors; undefined = zero
  // (N,), bool or integer (nonzero = true): atoms whose energy is counted; undefined = all.
  // Only for models taking it (input_names() has "local_mask"); others raise InputError.
  at::Tensor local_mask;
};

// Results for one frame, always float64, contiguous, on the CPU.
struct Outputs {
  double total_energy = 0.0;  // eV
  at::Tensor atomic_energy;   // (N,), eV
  at::Tensor forces;          // (N, 3), eV/Å
  // (3, 3), eV. Given by the model (TorchScript, `pair_nequip` target), or derived as
  // -stress * V when the model gives only stress and the cell has a volume.
  std::optional<at::Tensor> virial;
  // (3, 3), eV/Å^3, ASE sign (positive = tensile). Given by the model (TorchScript, `ase`
  // target), or derived as -virial / V. Absent when the cell has no volume.
  std::optional<at::Tensor> stress;
  // Two atoms closer than Model::close_pair_threshold(), reported by the first call that finds
  // such a pair after the model was loaded (or after Model::report_close_pairs_again()).
  std::optional<ClosePair> close_pair;
  // (N, 3, 3), eV: per-atom virials, each edge's virial split half to each of its two atoms,
  // so they sum to the virial. Given by models returning "atom_virial" (TorchScript files
  // of this project, AOTI target `pair_nequip_domain`).
  std::optional<at::Tensor> atom_virial;
  // A committee file's (Metadata::committee_size > 1) deviations over its K models, whose
  // mean (or first model, metadata key committee_drive) the outputs above are; population
  // standard deviations (DeePMD-kit's): (N,) eV/Å per atom the norm of the standard deviation
  // of the K force vectors; eV the standard deviation of the K total energies; (3, 3) eV that
  // of each virial component. Absent for one model.
  std::optional<at::Tensor> force_deviation;
  std::optional<double> energy_deviation;
  std::optional<at::Tensor> virial_deviation;
  // A committee's layer-by-layer call (Model::compute_exchanging): each member's forces
  // (K, N, 3) eV/Å on every node, total energy (K,) eV and virial (K, 3, 3) eV, all of this
  // rank's share, as the outputs above are. The deviations need the members' forces after
  // each ghost's reached its owner and the energies and virials summed over the ranks: the
  // front end derives them (force_deviation, energy_deviation, virial_deviation are absent
  // there). Absent otherwise.
  std::optional<at::Tensor> member_forces;
  std::optional<at::Tensor> member_energies;
  std::optional<at::Tensor> member_virials;
};

// Several frames evaluated in one call (Model::compute_batch): the frames' atoms one after
// another, one graph with no edge between two frames (FILE_CONTRACT §1, batched). Any dtypes,
// devices and strides, as Inputs.
struct BatchInputs {
  at::Tensor pos;              // (N, 3), Å: the atoms of frame 0, then those of frame 1, ...
  at::Tensor atom_types;       // (N,), values in [0, num_types)
  at::Tensor edge_index;       // (2, E), values in [0, N), both atoms of an edge in one frame
  at::Tensor edge_cell_shift;  // (E, 3), integer-valued image shifts; undefined = all zero
  at::Tensor cell;             // (F, 3, 3), rows = lattice vectors, a zero cell for a
                               // non-periodic frame; undefined = all zero
  at::Tensor batch;            // (N,), the frame of each atom: sorted, in [0, F)
  at::Tensor num_atoms;        // (F,), the atoms of each frame (at least one), summing to N
};

// Results for a batch, always float64, contiguous, on the CPU.
struct BatchOutputs {
  at::Tensor total_energy;   // (F,), eV
  at::Tensor atomic_energy;  // (N,), eV
  at::Tensor forces;         // (N, 3), eV/Å
  // (F, 3, 3), eV. Given by the model, or derived as -stress * V for the frames with a
  // volume (NaN for the others) when the model gives only stress.
  std::optional<at::Tensor> virial;
  // (F, 3, 3), eV/Å^3, ASE sign. Given by the model or derived as -virial / V; NaN for each
  // frame whose cell has no volume.
  std::optional<at::Tensor> stress;
  // (N, 3, 3), eV: per-atom virials, as Outputs::atom_virial, where the model gives them.
  std::optional<at::Tensor> atom_virial;
};

// How the ranks of a domain decomposition share node features between the layers of
// Model::compute_exchanging. The nodes are a rank's atoms: those it owns and ghost copies of
// atoms owned by it or by other ranks (LAMMPS' nlocal + nghost). Each call gets a (N, width)
// float64, contiguous CPU tensor, one row per node, to change in place.
class FeatureExchange {
 public:
  virtual ~FeatureExchange() = default;
  // After a layer: every ghost row becomes a copy of its owner's row (LAMMPS forward_comm).
  virtual void forward(at::Tensor& features) = 0;
  // In the backward pass, with gradients by the node features: every ghost row is added to
  // its owner's row, and then set to zero (LAMMPS reverse_comm).
  virtual void reverse(at::Tensor& gradients) = 0;
};

class Model {
 public:
  // Opens `path` on `device` ("cpu", "cuda" or "cuda:k"; "" = the device type the file was
  // compiled for). A "cuda" without an index is the GPU select_device gives `local_rank` (the
  // process's rank among those of its node; 0: the first GPU). The format is chosen by the
  // extension (".nequip.pth" or ".nequip.pt2") and confirmed by the archive's content.
  // The archive is read once, before anything of it is used: a record that fails its zip
  // checksum, or content that does not match the content hash nequip-compile recorded
  // (content_hash), is refused (ModelFileError: damaged or edited; files without the hash, of
  // other producers or older versions, have their checksums checked only). A file is refused
  // (DeviceError) on another device type than it was compiled for (Metadata::compiled_for).
  // A .pt2 holds native code, run as is; before loading it, the runtime refuses (DeviceError)
  // one compiled for another machine (AOTI_MACHINE) or for x86 vector instructions this CPU
  // lacks (AOTI_CPU_ISA), and (ModelFileError) one made with another major version of torch
  // (our key torch_version; another minor version: warnings()).
  // Throws ModelFileError, DeviceError or TorchError.
  explicit Model(const std::string& path, const std::string& device = "", int local_rank = 0);
  ~Model();
  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const std::string& path() const;
  ModelFormat format() const;
  c10::Device device() const;
  const Metadata& metadata() const;

  // Shorthands for metadata() fields.
  const std::vector<std::string>& type_names() const;
  int64_t num_types() const;
  double r_max() const;
  const std::vector<double>& per_edge_type_cutoff() const;  // T*T row-major, or empty
  const std::string& model_dtype() const;
  int64_t num_layers() const;      // 0 when the metadata does not say
  int64_t committee_size() const;  // models of a committee file; 1 for one model

  // Names of the fields the model takes. AOTI: `nequip_aoti_inputs`; TorchScript:
  // `nequip_torchscript_inputs`; when absent, the five of FILE_CONTRACT §3-4 (pos edge_index
  // atom_types cell edge_cell_shift). Optional: "local_mask"; "batch" and "num_atoms" (given
  // by compute_batch, and for one frame by compute to a file that requires them).
  const std::vector<std::string>& input_names() const;
  bool takes(const std::string& input_name) const;

  // Names of the fields the model returns. AOTI: `nequip_aoti_outputs` (the `pair_nequip`
  // order "atomic_energy forces virial" when absent); TorchScript: `nequip_torchscript_outputs`
  // (the outputs FILE_CONTRACT §3 guarantees, atomic_energy total_energy forces stress virial,
  // when absent).
  const std::vector<std::string>& output_names() const;
  bool returns(const std::string& output_name) const;

  // What loading found that does not stop the model from running (e.g. a .pt2 made with
  // another minor version of torch), one message each, naming the file. Each front end shows
  // them once, when it loads the model (Python: a ModelFileWarning; LAMMPS: a warning).
  const std::vector<std::string>& warnings() const;

  // How close two atoms may come before the model's results are extrapolation (Å): the
  // metadata's closest_training_pair, or NonFiniteOutputError::kOverlapFraction * r_max.
  double close_pair_threshold() const;
  // Outputs::close_pair is given once after loading; this asks for it once more (LAMMPS: once
  // per run).
  void report_close_pairs_again();

  // Evaluates the model on one frame. Throws InputError for bad inputs, TorchError when
  // torch fails, NonFiniteOutputError when the energy or forces are not finite. Not safe to
  // call concurrently on the same Model. On a GPU, inputs given on the CPU are checked there
  // and copied to the device once; the outputs come back in one copy: no other
  // host-device synchronisation.
  Outputs compute(const Inputs& inputs);

  // Whether the file evaluates several frames per call (compute_batch): its inputs include
  // "batch" and "num_atoms" (AOTI target `batch`; our TorchScript files).
  bool takes_batches() const;

  // Evaluates the model on a batch of frames in one call. Throws InputError for bad inputs
  // (as compute(), and a `batch` not sorted or disagreeing with `num_atoms`, `num_atoms` not
  // summing to N, an edge joining two frames) and for a file that takes one frame per call
  // (takes_batches() false), TorchError when torch fails, NonFiniteOutputError when an
  // energy or force is not finite (naming the closest atoms of the whole batch).
  BatchOutputs compute_batch(const BatchInputs& inputs);

  // Whether the file can run layer by layer with compute_exchanging (our TorchScript files
  // that record layer_feature_widths, .pt2 files of target pair_nequip_domain; committee files
  // that record committee_layer_feature_widths).
  bool exchanges_features() const;

  // Evaluates the model layer by layer on one rank's share of a domain decomposition, calling
  // `exchange` between layers so that every node's features are those of the whole system:
  // exact, with each rank computing only the edges of the atoms it owns. Inputs: `pos` and
  // `atom_types` of all N nodes (owned atoms and ghosts), `local_mask` marking the owned
  // nodes whose energy counts (required), edges centered on owned nodes only (neighbors may
  // be ghosts; shifts are usually undefined: ghosts are at their images' positions).
  // Outputs as compute(): atomic energies (0 on nodes not local), forces on every node (a
  // ghost's belong to its owner), the virial of this rank's edges and per-atom virials;
  // summed over the ranks they are those of the whole system. A committee file runs its
  // members one after the other, each layer by layer with its own exchanges (on the same
  // inputs), and gives their mean (or first member's, committee_drive) and each member's
  // forces, energy and virial (Outputs::member_forces ...). With no nodes at all (a rank
  // that sees no atoms) it still takes its part in every exchange, and returns zeros. Throws
  // InputError when the model cannot (exchanges_features() false), else as compute().
  Outputs compute_exchanging(const Inputs& inputs, FeatureExchange& exchange);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

// The guards of a model's outputs, for every path that evaluates a model: Model::compute
// applies them, and the eager models of checkpoints and packages (Python, nequip.inference)
// call them, so that one rule gives one message whatever runs the model. `frame` needs pos
// and edge_index, and for periodic frames edge_cell_shift and cell (any dtypes).
//
// Throws NonFiniteOutputError, naming the closest two atoms, when `atomic_energy` or `forces`
// hold a NaN or an infinity.
void check_finite_outputs(const std::string& path, double r_max, const Inputs& frame,
                          const at::Tensor& atomic_energy, const at::Tensor& forces);

// How close two atoms may come before the results of the model with `metadata` (its keys as
// stored; r_max and closest_training_pair are read) are extrapolation, in Å: see ClosePair.
// Throws ModelFileError, naming `source`, for a malformed closest_training_pair or r_max.
double close_pair_threshold(const std::string& source,
                            const std::map<std::string, std::string>& metadata);

// The warning of ClosePair::message ("once per model"), or nothing, for the closest two atoms
// of `frame` and a model with `metadata` (close_pair_threshold). Model::compute finds the same
// pair in its own pass over the edges.
std::optional<std::string> close_pair_warning(const std::string& path,
                                              const std::map<std::string, std::string>& metadata,
                                              const Inputs& frame);

// The checked metadata of a compiled file, without loading its model (cheap: a front end
// that needs only the type names or the cutoff). Throws ModelFileError or TorchError.
Metadata read_metadata(const std::string& path);

// The content hash nequip-compile records in a compiled file ("sha256:" and 64 hexadecimal
// digits): the SHA-256 of every record of its zip archive but the recorded hash itself, in the
// order of their names, each as its name, a zero byte, the name's and the record's sizes (8
// bytes each, little-endian) and its bytes (docs/files.md). Model and read_metadata verify it
// before anything of the file is used. Throws ModelFileError as read_metadata does.
std::string content_hash(const std::string& path);

// Where nequip-compile stores the content hash: a record of that name below the archive's top
// directory (not a metadata key: the metadata is part of what it covers).
inline constexpr const char* kContentHashRecord = "nequip/content_hash";

// `raw` parsed and checked as the metadata of a file is read: the one check of FILE_CONTRACT
// §2 and the project's keys, which the compiler asks before it writes a file. `source` names
// the metadata in messages (a path, "the model"). Throws ModelFileError.
Metadata check_metadata(const std::string& source, std::map<std::string, std::string> raw);

// The device a front end should open a file on: `requested` ("" = the file's own device type,
// `compiled_for`, or "cpu" when that is empty; else "cpu", "cuda" or "cuda:k"). A "cuda"
// without an index becomes "cuda:(local_rank mod num_cuda_devices)", so that the processes of
// one node (LAMMPS' MPI ranks, by node-local rank) spread over its GPUs. Throws DeviceError
// for a malformed name and for "cuda" when num_cuda_devices is 0.
std::string select_device(const std::string& requested, const std::string& compiled_for,
                          int local_rank, int num_cuda_devices);

// The device `name` names ("cpu", "cuda" or "cuda:k"): the one parser of device names of the
// project (the compiler and the eager front ends call it through Python). With
// `on_this_machine`, checked against this machine and returned by its canonical name ("cpu",
// "cuda:k"; "cuda" is "cuda:0"); without, the name only is checked and returned as given.
// Throws DeviceError for a malformed name or (on_this_machine) a device this machine lacks.
std::string parse_device(const std::string& name, bool on_this_machine = true);

// CUDA devices visible to torch in this process (0 with a CPU-only torch).
int cuda_device_count();

// Number of intra-op threads torch uses in this process (e.g. LAMMPS' OpenMP thread count).
void set_num_threads(int num_threads);

}  // namespace nequip
