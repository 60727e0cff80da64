/* ----------------------------------------------------------------------
   pair_style nequip: a compiled NequIP model evaluated through the nequip
   C++ runtime (cpp/include/nequip/runtime.h). Torch appears here only as
   the runtime's at::Tensor inputs (views of this style's buffers) and
   outputs; loading, checking and running the model is the runtime's job.

   The model's nodes are the owned atoms, and its edges those of the full
   neighbor list. A ghost atom that is a periodic image of an owned atom is
   folded onto it (atom->map of its tag) plus an integer image shift, so the
   model sees the periodic system exactly as the ASE calculator does
   (FILE_CONTRACT §1):
       edge vector = pos[j] - pos[i] + shift . cell.
   On one MPI rank every ghost folds: forces exist on owned atoms only.

   On several ranks ("exchange mode", files that run layer by layer: target
   pair_nequip_domain of a .pt2, or a .nequip.pth of this version), every
   owned and ghost atom is a node, the edges are those of the owned atoms
   only, and between two layers the ghosts receive their owners' node
   features through LAMMPS' communication of this pair style (forward_comm);
   in the backward pass their feature gradients go back to the owners
   (reverse_comm). Each rank thus evaluates its own edges only, and needs
   ghosts within one cutoff plus the skin (LAMMPS' own communication cutoff).
   The model sums the owned atoms' energies (local_mask) and gives forces on
   every node; LAMMPS sends the ghosts' forces and per-atom virials to their
   owners (newton_pair on). Each rank's virial is that of its own edges, and
   LAMMPS sums them.

   Either way the virial is the model's, never virial_fdotr_compute().
------------------------------------------------------------------------- */

#include "pair_nequip.h"

#include "atom.h"
#include "comm.h"
#include "domain.h"
#include "error.h"
#include "exceptions.h"
#include "force.h"
#include "memory.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "update.h"
#include "utils.h"

#include <nequip/runtime.h>

#include "standard_atomic_masses.h"

#include <ATen/ops/from_blob.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <exception>
#include <string>

using namespace LAMMPS_NS;

// Ghosts are exact periodic images of their owners; a fractional shift further than this
// from an integer means the ghost is not one (a bug, not a user error).
static constexpr double SHIFT_TOLERANCE = 1.0e-6;
static constexpr double ZERO_SHIFT[3] = {0.0, 0.0, 0.0};

/* ----------------------------------------------------------------------
   The runtime's side of the per-layer exchange: the rows it gives are the
   nodes, one per owned and ghost atom, in atom order
------------------------------------------------------------------------- */

class PairNequIP::RankExchange : public nequip::FeatureExchange {
 public:
  explicit RankExchange(PairNequIP &pair) : pair(pair) {}
  void forward(at::Tensor &features) override { exchange(features, true); }
  void reverse(at::Tensor &gradients) override { exchange(gradients, false); }

 private:
  void exchange(at::Tensor &rows, bool forward)
  { pair.exchange_rows(rows.data_ptr<double>(), (int) rows.size(1), forward); }
  PairNequIP &pair;
};

/* ---------------------------------------------------------------------- */

PairNequIP::PairNequIP(LAMMPS *lmp) :
    Pair(lmp), num_model_types(0), exchange_mode(false), num_local_nodes(0)
{
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  // one rank: forces exist on owned atoms only, so the virial comes from the model (the
  // derivative of the energy by the edge vectors), not from sum(f . r) over owned and ghost
  // atoms; several ranks: the model's virial is exact as well, and cheaper
  no_virial_fdotr_compute = 1;
  centroidstressflag = CENTROID_NOTAVAIL;
}

/* ---------------------------------------------------------------------- */

PairNequIP::~PairNequIP()
{
  if (copymode) return;
  if (deviation_file) fclose(deviation_file);
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
  }
}

/* ---------------------------------------------------------------------- */

void PairNequIP::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);
  if (vflag_atom && !model->returns("atom_virial"))
    error->all(FLERR,
               "pair_style nequip: model {} gives no per-atom virials (needed by compute "
               "stress/atom); compile it with `nequip-compile ... --target pair_nequip_domain` "
               "(.pt2) or again with this version of nequip (.pth)",
               model->path());

  exchange_mode ? build_exchange_graph() : build_graph();
  const int64_t num_nodes = (int64_t) node_type.size();
  const int64_t num_edges = (int64_t) edge_index.size() / 2;
  if (exchange_mode) {
    tally_steps += 1.0;
    tally_local_nodes += num_local_nodes;
    tally_nodes += num_nodes;
    tally_edges += num_edges;
  }
  // a rank without atoms still takes its part in the other ranks' exchanges (the runtime's)
  if (num_nodes == 0 && !exchange_mode) return;

  // the cell as rows of lattice vectors a, b, c (h = xprd yprd zprd yz xz xy)
  const double *h = domain->h;
  double cell[9] = {h[0], 0.0, 0.0, h[5], h[1], 0.0, h[4], h[3], h[2]};

  nequip::Outputs out;
  try {
    const auto f64 = at::TensorOptions().dtype(at::kDouble);
    const auto i64 = at::TensorOptions().dtype(at::kLong);
    nequip::Inputs in;
    in.pos = at::from_blob(node_pos.data(), {num_nodes, 3}, f64);
    in.atom_types = at::from_blob(node_type.data(), {num_nodes}, i64);
    in.edge_index = at::from_blob(edge_index.data(), {2, num_edges}, i64);
    in.cell = at::from_blob(cell, {3, 3}, f64);
    if (exchange_mode)
      in.local_mask =
          at::from_blob(node_is_local.data(), {num_nodes}, at::TensorOptions().dtype(at::kByte));
    if (exchange_mode) {
      // ghosts sit at their images' positions: no shifts
      RankExchange exchange(*this);
      out = model->compute_exchanging(in, exchange);
    } else {
      in.edge_cell_shift = at::from_blob(edge_cell_shift.data(), {num_edges, 3}, f64);
      out = model->compute(in);
    }
  } catch (const nequip::NonFiniteOutputError &e) {
    // the runtime numbers atoms by node; a LAMMPS user knows them by atom ID
    std::string pair;
    if (e.closest_pair())
      pair =
          fmt::format("atoms with IDs {} and {}", atom->tag[atom_of_node[e.closest_pair()->first]],
                      atom->tag[atom_of_node[e.closest_pair()->second]]);
    error->one(FLERR, "pair_style nequip: {}", e.message(pair));
  } catch (const LAMMPSException &) {
    throw;    // raised by this rank's exchange (error->one there), already reported
  } catch (const std::exception &e) {
    error->one(FLERR, "pair_style nequip: evaluating model {} failed: {}", model->path(), e.what());
  }

  // atoms closer than the model can be trusted at: once per run, by the rank that sees them
  if (out.close_pair) warn_of_close_pair(*out.close_pair);

  // tallies add to what other styles (hybrid/overlay) put there, never overwrite it

  const double *atomic_energy = out.atomic_energy.data_ptr<double>();
  const double *forces = out.forces.data_ptr<double>();
  double **f = atom->f;
  // one rank: the owned atoms only; several: ghosts too, whose forces LAMMPS sends back
  for (int64_t node = 0; node < num_nodes; node++) {
    const int i = atom_of_node[node];
    f[i][0] += forces[3 * node + 0];
    f[i][1] += forces[3 * node + 1];
    f[i][2] += forces[3 * node + 2];
  }
  if (eflag_atom)
    for (int64_t node = 0; node < num_nodes; node++)
      if (node_is_local[node]) eatom[atom_of_node[node]] += atomic_energy[node];

  if (eflag_global) eng_vdwl += out.total_energy;

  if (model->committee_size() > 1) {
    committee_deviations(out, num_nodes);
    if (!deviation_path.empty() && update->ntimestep % deviation_every == 0 &&
        update->ntimestep != deviation_last_step)
      write_deviation();
  }

  if (vflag_global) {
    if (!out.virial)
      error->one(FLERR, "pair_style nequip: model {} gives no virial for this box", model->path());
    const double *w = out.virial->data_ptr<double>();    // (3, 3) row-major
    virial[0] += w[0];                                   // xx
    virial[1] += w[4];                                   // yy
    virial[2] += w[8];                                   // zz
    virial[3] += w[1];                                   // xy
    virial[4] += w[2];                                   // xz
    virial[5] += w[5];                                   // yz
  }

  if (vflag_atom) {
    // each edge's virial split half to each end (LAMMPS' convention for pair styles); on
    // several ranks the ghosts' halves go back to their owners with compute stress/atom's
    // reverse communication (newton_pair on)
    const double *w = out.atom_virial->data_ptr<double>();    // (N, 3, 3) row-major
    for (int64_t node = 0; node < num_nodes; node++) {
      const double *wn = w + 9 * node;
      double *v = vatom[atom_of_node[node]];
      v[0] += wn[0];
      v[1] += wn[4];
      v[2] += wn[8];
      v[3] += wn[1];
      v[4] += wn[2];
      v[5] += wn[5];
    }
  }
}

/* ----------------------------------------------------------------------
   A committee's deviations at this step, DeePMD-kit's (population standard
   deviations over the K models): per owned atom the norm of the standard
   deviation of the K force vectors (atom_force_deviation, what `fix pair`
   reads), and over the whole system (MPI_Allreduce over the world
   communicator) its max, min and mean, the energy's and each virial
   component's (per atom: model_devi.out's). On one rank the runtime gives
   them; on several, each rank's share of each member's forces, energy and
   virial: a ghost's forces go to their owner (LAMMPS' reverse communication
   of this pair style, 3K doubles per atom) and the energies and virials are
   summed over the ranks before the deviations are taken.
------------------------------------------------------------------------- */

void PairNequIP::committee_deviations(const nequip::Outputs &out, int64_t num_nodes)
{
  const int nlocal = atom->nlocal;
  atom_force_deviation.assign(std::max(atom->nmax, 1), 0.0);
  const int64_t K = model->committee_size();
  double energy_deviation = 0.0;
  double virial_deviation[9] = {0.0};

  if (!exchange_mode) {
    if (!out.force_deviation || !out.energy_deviation)
      error->all(FLERR, "pair_style nequip: model {} gives no force deviation", model->path());
    const double *deviation = out.force_deviation->data_ptr<double>();
    for (int64_t node = 0; node < num_nodes; node++)
      atom_force_deviation[atom_of_node[node]] = deviation[node];
    energy_deviation = *out.energy_deviation;
    if (out.virial_deviation)
      std::copy_n(out.virial_deviation->data_ptr<double>(), 9, virial_deviation);
  } else {
    if (!out.member_forces || !out.member_energies || !out.member_virials)
      error->all(FLERR, "pair_style nequip: model {} gives no committee members' forces",
                 model->path());
    // (K, N, 3) -> rows of atoms (N, 3K); owned rows += their ghosts' (all ranks take part)
    at::Tensor rows = out.member_forces->permute({1, 0, 2}).contiguous();
    exchange_rows(rows.data_ptr<double>(), (int) (3 * K), false);
    const double *member_forces = rows.data_ptr<double>();
    for (int64_t node = 0; node < std::min<int64_t>(num_nodes, nlocal); node++) {
      if (!node_is_local[node]) continue;
      const double *f = member_forces + 3 * K * node;
      double mean[3] = {0.0, 0.0, 0.0}, spread = 0.0;
      for (int64_t k = 0; k < K; k++)
        for (int d = 0; d < 3; d++) mean[d] += f[3 * k + d] / K;
      for (int64_t k = 0; k < K; k++)
        for (int d = 0; d < 3; d++) spread += (f[3 * k + d] - mean[d]) * (f[3 * k + d] - mean[d]);
      atom_force_deviation[node] = std::sqrt(spread / K);
    }
    // each member's energy and virial: the sums of the ranks' shares
    std::vector<double> share((size_t) (10 * K)), total((size_t) (10 * K));
    std::copy_n(out.member_energies->data_ptr<double>(), K, share.begin());
    std::copy_n(out.member_virials->data_ptr<double>(), 9 * K, share.begin() + K);
    MPI_Allreduce(share.data(), total.data(), (int) (10 * K), MPI_DOUBLE, MPI_SUM, world);
    auto deviation_of = [K](const double *values, int stride) {
      double mean = 0.0, spread = 0.0;
      for (int64_t k = 0; k < K; k++) mean += values[k * stride] / K;
      for (int64_t k = 0; k < K; k++)
        spread += (values[k * stride] - mean) * (values[k * stride] - mean);
      return std::sqrt(spread / K);
    };
    energy_deviation = deviation_of(total.data(), 1);
    for (int c = 0; c < 9; c++) virial_deviation[c] = deviation_of(total.data() + K + c, 9);
  }

  // force deviation over the owned atoms of non-NULL types: max, -min, sum, count
  double local_extremes[2] = {-INFINITY, -INFINITY}, local_sums[2] = {0.0, 0.0};
  for (int64_t node = 0; node < num_nodes; node++) {
    if (!node_is_local[node]) continue;
    const double deviation = atom_force_deviation[atom_of_node[node]];
    local_extremes[0] = std::max(local_extremes[0], deviation);
    local_extremes[1] = std::max(local_extremes[1], -deviation);
    local_sums[0] += deviation;
    local_sums[1] += 1.0;
  }
  double extremes[2], sums[2];
  MPI_Allreduce(local_extremes, extremes, 2, MPI_DOUBLE, MPI_MAX, world);
  MPI_Allreduce(local_sums, sums, 2, MPI_DOUBLE, MPI_SUM, world);
  const double natoms = (double) atom->natoms;
  double virial_max = -INFINITY, virial_min = INFINITY, virial_norm = 0.0;
  for (int c = 0; c < 9; c++) {
    const double per_atom = virial_deviation[c] / natoms;
    virial_max = std::max(virial_max, per_atom);
    virial_min = std::min(virial_min, per_atom);
    virial_norm += per_atom * per_atom;
  }
  deviation_summary = {virial_max,  virial_min,   std::sqrt(virial_norm) / 3.0,
                       extremes[0], -extremes[1], sums[0] / std::max(sums[1], 1.0)};
  // compute pair sums pvector over the ranks: the whole system's values on rank 0 only
  const bool me_first = comm->me == 0;
  pvector[0] = me_first ? extremes[0] : 0.0;
  pvector[1] = me_first ? energy_deviation : 0.0;
  pvector[2] = me_first ? virial_max : 0.0;
}

/* ----------------------------------------------------------------------
   one line of DeePMD-kit's model_devi.out (rank 0): step, max/min/avg of the
   virial deviation (std over the models of each virial component, per atom:
   avg = its norm / 3), max/min/avg of the per-atom force deviation
------------------------------------------------------------------------- */

void PairNequIP::write_deviation()
{
  deviation_last_step = update->ntimestep;
  if (comm->me != 0) return;
  const std::array<double, 6> &d = deviation_summary;
  fmt::print(deviation_file, "{:>12}{:>19.6e}{:>19.6e}{:>19.6e}{:>19.6e}{:>19.6e}{:>19.6e}\n",
             update->ntimestep, d[0], d[1], d[2], d[3], d[4], d[5]);
  fflush(deviation_file);
}

/* ----------------------------------------------------------------------
   `fix pair` reads the per-atom force deviation of a committee (eV/Angstrom,
   a per-atom vector; owned atoms, 0 for atoms of NULL types)
------------------------------------------------------------------------- */

void *PairNequIP::extract_peratom(const char *name, int &ncol)
{
  if (strcmp(name, "force_deviation") != 0 || !model) return nullptr;
  if (model->committee_size() < 2)
    error->all(FLERR,
               "pair_style nequip: force_deviation is the deviation of a committee of models, "
               "and model {} is one model: compile several models into one file (nequip-compile "
               "a.nequip.zip b.nequip.zip ... committee.nequip.pt2)",
               model->path());
  ncol = 0;
  if (atom_force_deviation.size() < (size_t) std::max(atom->nmax, 1))
    atom_force_deviation.resize(std::max(atom->nmax, 1), 0.0);
  return atom_force_deviation.data();
}

/* ----------------------------------------------------------------------
   pair_style nequip [device cpu|cuda|cuda:K] [deviation FILE [every N]]
------------------------------------------------------------------------- */

void PairNequIP::settings(int narg, char **arg)
{
  requested_device.clear();
  deviation_path.clear();
  deviation_every = 1;
  bool every_given = false;
  int iarg = 0;
  while (iarg < narg) {
    const std::string keyword = arg[iarg];
    if (keyword == "deviation" || keyword == "every") {
      if (iarg + 1 >= narg)
        error->all(FLERR, "Illegal pair_style nequip command: '{}' needs a value: {}", keyword,
                   keyword == "every" ? "a number of steps" : "a file name");
      if (keyword == "deviation") {
        deviation_path = arg[iarg + 1];
      } else {
        deviation_every = utils::bnumeric(FLERR, arg[iarg + 1], false, lmp);
        if (deviation_every < 1)
          error->all(FLERR, "Illegal pair_style nequip command: 'every' must be at least 1, got {}",
                     deviation_every);
        every_given = true;
      }
      iarg += 2;
      continue;
    }
    if (keyword != "device")
      error->all(FLERR,
                 "Illegal pair_style nequip command: unknown keyword '{}' (expected "
                 "'pair_style nequip [device cpu|cuda|cuda:K] [deviation FILE [every N]]')",
                 keyword);
    if (iarg + 1 >= narg)
      error->all(FLERR,
                 "Illegal pair_style nequip command: 'device' needs a value: cpu, cuda "
                 "or cuda:K");
    requested_device = arg[iarg + 1];
    try {
      // the name only: whether the device exists is found when the model is loaded
      nequip::parse_device(requested_device, /*on_this_machine=*/false);
    } catch (const std::exception &e) {
      error->all(FLERR, "Illegal pair_style nequip command: {}", e.what());
    }
    iarg += 2;
  }
  if (every_given && deviation_path.empty())
    error->all(FLERR,
               "Illegal pair_style nequip command: 'every' is how often the deviation file is "
               "written: give 'deviation FILE' too");
  if (deviation_file) {
    fclose(deviation_file);
    deviation_file = nullptr;
  }
  deviation_last_step = -1;
}

/* ----------------------------------------------------------------------
   pair_coeff * * MODEL NAME_1 ... NAME_ntypes
------------------------------------------------------------------------- */

void PairNequIP::coeff(int narg, char **arg)
{
  const int ntypes = atom->ntypes;
  if (narg < 3)
    error->all(FLERR,
               "Incorrect args for pair coefficients: expected "
               "'pair_coeff * * MODEL.nequip.pt2|MODEL.nequip.pth NAME_1 ... NAME_{}'",
               ntypes);

  // load first, so that a failure leaves a previously set up pair style untouched
  std::unique_ptr<nequip::Model> loaded;
  std::string failure;
  try {
    loaded = std::make_unique<nequip::Model>(arg[2], requested_device, node_local_rank());
  } catch (const std::exception &e) {
    failure = e.what();    // the runtime's messages name the file
  }
  // A file is the same for every rank, a device (a GPU index, a node's own disk) may not be:
  // one message when every rank failed, else the message of each rank that did.
  int failed_here = failure.empty() ? 0 : 1, failed_ranks = 0;
  MPI_Allreduce(&failed_here, &failed_ranks, 1, MPI_INT, MPI_SUM, world);
  if (failed_ranks == comm->nprocs)
    error->all(FLERR, "pair_style nequip cannot use the model: {}", failure);
  if (failed_here) error->one(FLERR, "pair_style nequip cannot use the model: {}", failure);
  // the others wait here for the abort (error->one ends every rank)
  if (failed_ranks > 0) MPI_Barrier(world);
  // what loading found that does not stop the model (e.g. another torch minor version)
  if (comm->me == 0)
    for (const std::string &warning : loaded->warnings())
      error->warning(FLERR, "pair_style nequip: {}", warning);
  const std::vector<std::string> &type_names = loaded->type_names();
  const std::string known_names = utils::join_words(type_names, " ");

  if (narg != 3 + ntypes)
    error->all(FLERR,
               "pair_coeff for pair_style nequip needs one model type name (or NULL) per "
               "LAMMPS atom type: got {} names for {} atom types (model {} has types: {})",
               narg - 3, ntypes, arg[2], known_names);

  std::vector<int> type_map(ntypes + 1, -1);
  for (int itype = 1; itype <= ntypes; itype++) {
    const std::string name = arg[2 + itype];
    if (name == "NULL") {
      // a sub-style of hybrid is not force->pair itself
      if (force->pair == this)
        error->all(FLERR,
                   "pair_coeff: atom type {} is NULL, which leaves it to another pair style and "
                   "needs 'pair_style hybrid' or 'hybrid/overlay'; give it one of the types of "
                   "model {} ({}), or use pair_style hybrid/overlay with a style for type {}",
                   itype, arg[2], known_names, itype);
      continue;
    }
    auto found = std::find(type_names.begin(), type_names.end(), name);
    if (found == type_names.end())
      error->all(FLERR,
                 "pair_coeff: model {} has no type named '{}' (for atom type {}); its "
                 "types are: {}",
                 arg[2], name, itype, known_names);
    type_map[itype] = (int) (found - type_names.begin());
  }

  // cutoff of each (center, neighbor) model type pair: per_edge_type_cutoff or r_max
  const int num_types = (int) loaded->num_types();
  std::vector<double> cutoff = loaded->per_edge_type_cutoff();
  if (cutoff.empty()) cutoff.assign((size_t) num_types * num_types, loaded->r_max());
  std::vector<double> cut_squared(cutoff.size());
  std::transform(cutoff.begin(), cutoff.end(), cut_squared.begin(), [](double c) {
    return c * c;
  });

  if (!allocated) allocate();
  model = std::move(loaded);
  // a committee's three values for compute pair (committee_deviations)
  nextra = model->committee_size() > 1 ? (int) committee_values.size() : 0;
  pvector = nextra ? committee_values.data() : nullptr;
  committee_values.fill(0.0);
  log_devices();
  num_model_types = num_types;
  model_type = std::move(type_map);
  model_cutsq = std::move(cut_squared);
  masses_checked = false;

  for (int i = 1; i <= ntypes; i++)
    for (int j = i; j <= ntypes; j++)
      setflag[i][j] = (model_type[i] >= 0 && model_type[j] >= 0) ? 1 : 0;
}

/* ---------------------------------------------------------------------- */

void PairNequIP::init_style()
{
  if (domain->dimension != 3) error->all(FLERR, "pair_style nequip requires a 3d system");
  if (strcmp(update->unit_style, "metal") != 0)
    error->all(FLERR,
               "pair_style nequip requires 'units metal' (NequIP models use eV and Angstrom)");

  // atom IDs name atoms in messages; on one rank they also fold ghosts onto their owners
  if (atom->tag_enable == 0)
    error->all(FLERR, "pair_style nequip requires atom IDs: remove 'atom_modify id no'");

  if (!deviation_path.empty()) {
    if (model->committee_size() < 2)
      error->all(FLERR,
                 "pair_style nequip deviation {}: model {} is one model; the deviation is that "
                 "of a committee: compile several models into one file (nequip-compile "
                 "a.nequip.zip b.nequip.zip ... committee.nequip.pt2)",
                 deviation_path, model->path());
    if (comm->me == 0 && !deviation_file) {
      deviation_file = fopen(deviation_path.c_str(), "w");
      if (!deviation_file)
        error->one(FLERR, "pair_style nequip: cannot open deviation file {}: {}", deviation_path,
                   utils::getsyserror());
      fmt::print(deviation_file, "#{:>11}{:>19}{:>19}{:>19}{:>19}{:>19}{:>19}\n", "step",
                 "max_devi_v", "min_devi_v", "avg_devi_v", "max_devi_f", "min_devi_f",
                 "avg_devi_f");
      fflush(deviation_file);
    }
  }

  exchange_mode = comm->nprocs > 1;
  if (!exchange_mode) {
    // build_graph() finds a ghost's owner by the map from atom ID to index
    if (atom->map_style == Atom::MAP_NONE)
      error->all(FLERR,
                 "pair_style nequip on one MPI rank requires an atom map: add 'atom_modify map "
                 "yes' before the simulation box is defined");
    // A full list of the owned atoms' neighbors is all the model needs: every edge is
    // centered on an owned atom, and every ghost folds onto its owner in build_graph().
    neighbor->add_request(this, NeighConst::REQ_FULL);
  } else {
    if (!model->exchanges_features())
      error->all(FLERR,
                 "pair_style nequip on {} MPI ranks needs a model that runs layer by layer "
                 "(each rank evaluates the edges of its own atoms, exchanging node features "
                 "with the other ranks after every layer); model {} does not: compile it "
                 "with this version of nequip, `nequip-compile ... --target "
                 "pair_nequip_domain` (.pt2) or `--mode torchscript` (.pth), or run on one "
                 "MPI rank",
                 comm->nprocs, model->path());
    // ghosts' forces, per-atom virials and feature gradients go back to their owners
    if (force->newton_pair == 0)
      error->all(FLERR,
                 "pair_style nequip on {} MPI ranks requires 'newton on' (or "
                 "'newton on off'): forces on ghost atoms are sent to their owners",
                 comm->nprocs);
    // The features of the widest layer that sends them (the last layer's stay put), of the
    // model or of each committee member, as doubles; a committee's members' forces (3K per
    // atom) go back too. Read by comm->init(), which LAMMPS calls after force->init() (this).
    const nequip::Metadata &metadata = model->metadata();
    std::vector<std::vector<int64_t>> models = metadata.committee_layer_feature_widths;
    if (models.empty()) models.push_back(metadata.layer_feature_widths);
    comm_forward = 1;
    for (const std::vector<int64_t> &widths : models)
      for (size_t layer = 0; layer + 1 < widths.size(); layer++)
        comm_forward = std::max<int>(comm_forward, (int) widths[layer]);
    comm_reverse = comm_forward;
    if (model->committee_size() > 1)
      comm_reverse = std::max<int>(comm_reverse, (int) (3 * model->committee_size()));
    // Edges are centered on owned atoms, whose neighbors LAMMPS' communication cutoff
    // (never below the largest pair cutoff plus the skin) covers: no ghost neighbors.
    neighbor->add_request(this, NeighConst::REQ_FULL);
  }

  check_atoms_per_volume();
  if (!masses_checked && comm->me == 0) warn_of_mismatched_masses();
  model->report_close_pairs_again();    // once per run
  masses_checked = true;

  // torch's intra-op threads follow LAMMPS' OpenMP thread count: comm->nthreads is set from
  // OMP_NUM_THREADS (1 when unset) and changed by `-pk omp N` / `package omp N`. Set once per
  // run, so torch uses the cores LAMMPS was given and no more (MPI ranks x threads = cores).
  try {
    nequip::set_num_threads(comm->nthreads);
  } catch (const std::exception &e) {
    error->all(FLERR, "pair_style nequip cannot use {} threads: {}", comm->nthreads, e.what());
  }
}

/* ---------------------------------------------------------------------- */

double PairNequIP::init_one(int i, int j)
{
  if (setflag[i][j] == 0) error->all(FLERR, "All pair coeffs are not set");

  // LAMMPS' cutoffs are symmetric; the graph builders apply the model's per direction
  const int ti = model_type[i], tj = model_type[j];
  const double cutsq_ij = model_cutsq[ti * num_model_types + tj];
  const double cutsq_ji = model_cutsq[tj * num_model_types + ti];
  const double cut = std::sqrt(std::max(cutsq_ij, cutsq_ji));
  return cut;
}

/* ---------------------------------------------------------------------- */

int PairNequIP::pack_forward_comm(int n, int *list, double *buf, int /*pbc_flag*/, int * /*pbc*/)
{
  // features are invariant under the periodic shift of a ghost
  int m = 0;
  for (int i = 0; i < n; i++) {
    const double *row = exchanged_rows + (size_t) list[i] * exchanged_width;
    for (int k = 0; k < exchanged_width; k++) buf[m++] = row[k];
  }
  return m;
}

/* ---------------------------------------------------------------------- */

void PairNequIP::unpack_forward_comm(int n, int first, double *buf)
{
  std::copy(buf, buf + (size_t) n * exchanged_width,
            exchanged_rows + (size_t) first * exchanged_width);
}

/* ---------------------------------------------------------------------- */

int PairNequIP::pack_reverse_comm(int n, int first, double *buf)
{
  std::copy(exchanged_rows + (size_t) first * exchanged_width,
            exchanged_rows + (size_t) (first + n) * exchanged_width, buf);
  return n * exchanged_width;
}

/* ---------------------------------------------------------------------- */

void PairNequIP::unpack_reverse_comm(int n, int *list, double *buf)
{
  int m = 0;
  for (int i = 0; i < n; i++) {
    double *row = exchanged_rows + (size_t) list[i] * exchanged_width;
    for (int k = 0; k < exchanged_width; k++) row[k] += buf[m++];
  }
}

/* ----------------------------------------------------------------------
   End of a run on several ranks: the model's graph size per owned atom (its
   edges are the system's edges per atom: each rank evaluates its own)
------------------------------------------------------------------------- */

void PairNequIP::finish()
{
  if (!exchange_mode) return;
  double local[4] = {tally_steps, tally_local_nodes, tally_nodes, tally_edges};
  double total[4];
  MPI_Allreduce(local, total, 4, MPI_DOUBLE, MPI_SUM, world);
  tally_steps = tally_local_nodes = tally_nodes = tally_edges = 0.0;
  if (comm->me != 0 || total[1] == 0.0) return;
  utils::logmesg(lmp,
                 "pair_style nequip: on {} ranks the model evaluated {:.3f} atoms and {:.1f} "
                 "edges per owned atom (edges of owned atoms only, node features exchanged "
                 "after every layer)\n",
                 comm->nprocs, total[2] / total[1], total[3] / total[1]);
}

/* ---------------------------------------------------------------------- */

void PairNequIP::exchange_rows(double *rows, int width, bool forward)
{
  if (width > (forward ? comm_forward : comm_reverse))
    error->one(FLERR,
               "pair_style nequip: model {} exchanges {} features per atom, more than "
               "its metadata (layer_feature_widths) says",
               model->path(), width);
  exchanged_rows = rows;
  exchanged_width = width;
  if (forward) {
    comm->forward_comm(this, width);
  } else {
    comm->reverse_comm(this, width);
    const int nlocal = atom->nlocal;
    const int nall = nlocal + atom->nghost;
    std::fill(rows + (size_t) nlocal * width, rows + (size_t) nall * width, 0.0);
  }
  exchanged_rows = nullptr;
}

/* ---------------------------------------------------------------------- */

void PairNequIP::allocate()
{
  allocated = 1;
  const int np1 = atom->ntypes + 1;
  memory->create(setflag, np1, np1, "pair:setflag");
  for (int i = 1; i < np1; i++)
    for (int j = i; j < np1; j++) setflag[i][j] = 0;
  memory->create(cutsq, np1, np1, "pair:cutsq");
}

/* ----------------------------------------------------------------------
   This rank's rank among those of its node (MPI's shared-memory split of the
   world communicator): a `cuda` device without an index is the GPU of index
   (node-local rank mod GPUs of the node)
------------------------------------------------------------------------- */

int PairNequIP::node_local_rank()
{
  MPI_Comm node;
  MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, comm->me, MPI_INFO_NULL, &node);
  int local_rank = 0;
  MPI_Comm_rank(node, &local_rank);
  MPI_Comm_free(&node);
  return local_rank;
}

/* ----------------------------------------------------------------------
   One log line (rank 0) saying where every rank runs the model
------------------------------------------------------------------------- */

void PairNequIP::log_devices()
{
  const std::string mine = model->device().str();
  char name[32] = {0};
  std::strncpy(name, mine.c_str(), sizeof(name) - 1);
  std::vector<char> all(comm->me == 0 ? sizeof(name) * comm->nprocs : 0);
  MPI_Gather(name, sizeof(name), MPI_CHAR, all.data(), sizeof(name), MPI_CHAR, 0, world);
  if (comm->me != 0) return;
  // runs of ranks on the same device: "ranks 0-3 on cpu", "rank 0 on cuda:0, rank 1 on cuda:1"
  std::string said;
  int first = 0;
  for (int rank = 1; rank <= comm->nprocs; rank++) {
    const char *current = &all[sizeof(name) * first];
    if (rank < comm->nprocs && std::strcmp(&all[sizeof(name) * rank], current) == 0) continue;
    const std::string ranks = rank - 1 == first ? fmt::format("rank {}", first)
                                                : fmt::format("ranks {}-{}", first, rank - 1);
    said += fmt::format("{}{} on {}", said.empty() ? "" : ", ", ranks, current);
    first = rank;
  }
  utils::logmesg(lmp, "pair_style nequip: model {} runs on {}\n", model->path(), said);
}

/* ----------------------------------------------------------------------
   Two atoms closer than the model can be trusted at, named by atom ID: a
   warning from the rank that found them (on its screen, as error->one's
   messages are)
------------------------------------------------------------------------- */

void PairNequIP::warn_of_close_pair(const nequip::ClosePair &close)
{
  const std::string pair =
      fmt::format("atoms with IDs {} and {}", atom->tag[atom_of_node[close.atoms.first]],
                  atom->tag[atom_of_node[close.atoms.second]]);
  error->warning(FLERR, "pair_style nequip: {}",
                 close.message(model->path(), pair, "once per run"));
}

/* ----------------------------------------------------------------------
   Refuse (or warn about) a periodic box too dense to be real before any
   neighbor list is built: a box in the wrong units holds some N * density *
   (4/3) pi r_max^3 edges, memory no machine has (issue 33: 24 GB, then the
   kernel's kill). The thresholds and wording are those of the Python
   neighbor lists (python/nequip/data/neighbors.py, _check_atoms_per_volume):
   refused above MAX_ATOMS_PER_A3; a warning (rank 0, every run) above both
   DENSE_ATOMS_PER_A3 and CROWDED_NEIGHBORS_PER_ATOM. A non-periodic length
   counts as at least 4/3 r_max, as the atoms' extent does there.
------------------------------------------------------------------------- */

static constexpr double MAX_ATOMS_PER_A3 = 1000.0;
static constexpr double DENSE_ATOMS_PER_A3 = 1.0;
static constexpr double CROWDED_NEIGHBORS_PER_ATOM = 100.0;
static const double PI = std::acos(-1.0);

void PairNequIP::check_atoms_per_volume()
{
  const int periodic[3] = {domain->xperiodic, domain->yperiodic, domain->zperiodic};
  if (!(periodic[0] || periodic[1] || periodic[2]) || atom->natoms == 0) return;
  const double r_max = model->r_max();
  const double lengths[3] = {domain->xprd, domain->yprd, domain->zprd};
  double volume = 1.0;
  std::string lengths_text;
  for (int axis = 0; axis < 3; axis++) {
    volume *= periodic[axis] ? lengths[axis] : std::max(lengths[axis], 4.0 / 3.0 * r_max);
    lengths_text += fmt::format("{}{:.3g}{}", axis ? ", " : "", lengths[axis],
                                periodic[axis] ? "" : " (not periodic)");
  }
  const double num_atoms = (double) atom->natoms;
  const double density = num_atoms / volume;
  const double neighbors = density * 4.0 / 3.0 * PI * r_max * r_max * r_max;
  if (density <= MAX_ATOMS_PER_A3 &&
      (density <= DENSE_ATOMS_PER_A3 || neighbors <= CROWDED_NEIGHBORS_PER_ATOM))
    return;

  const std::string box =
      fmt::format("box lengths {} Å (volume {:.3g} Å³{})", lengths_text, volume,
                  (periodic[0] && periodic[1] && periodic[2])
                      ? ""
                      : ", a non-periodic length counted as at least 4/3 r_max");
  const double spacing = std::pow(density, -1.0 / 3.0);
  const std::string advice =
      "check the box's units ('units metal': Å; not nm, not units of the lattice constant) and "
      "that it is the box of these positions";
  if (density > MAX_ATOMS_PER_A3)
    error->all(
        FLERR,
        "pair_style nequip: the periodic box is far too small for its {} atoms: {} give {:.3g} "
        "atoms/Å³, atoms {:.2g} Å apart on average (no real structure exceeds {:g} atoms/Å³, "
        "0.1 Å apart); with r_max = {:g} Å the neighbor list would hold about {:.2g} "
        "neighbors per atom, {:.2g} edges: {}",
        atom->natoms, box, density, spacing, MAX_ATOMS_PER_A3, r_max, neighbors,
        neighbors * num_atoms, advice);
  if (comm->me == 0)
    error->warning(FLERR,
                   "pair_style nequip: the periodic box looks too small for its {} atoms: {} give "
                   "{:.3g} atoms/Å³, atoms {:.2g} Å apart on average, denser than any solid "
                   "(diamond: 0.18 atoms/Å³, 1.8 Å apart); with r_max = {:g} Å each atom has about "
                   "{:.2g} neighbors: {}",
                   atom->natoms, box, density, spacing, r_max, neighbors, advice);
}

/* ----------------------------------------------------------------------
   One warning (rank 0, once per pair_coeff) naming every LAMMPS type whose
   mass is more than 5% from the standard atomic mass of the element that
   pair_coeff names for it: element names in another order than the data
   file's types run silently with the wrong species otherwise. Model type
   names that are not element symbols are not checked. Called in init_style,
   since the masses may be set after pair_coeff.
------------------------------------------------------------------------- */

void PairNequIP::warn_of_mismatched_masses()
{
  if (atom->mass == nullptr || atom->rmass_flag) return;    // per-atom masses
  std::string mismatches;
  for (int itype = 1; itype <= atom->ntypes; itype++) {
    if (model_type[itype] < 0 || !atom->mass_setflag[itype]) continue;
    const std::string &name = model->type_names()[model_type[itype]];
    const double element_mass = nequip_plugin::standard_atomic_mass(name.c_str());
    const double mass = atom->mass[itype];
    if (element_mass == 0.0 || std::fabs(mass - element_mass) <= 0.05 * element_mass) continue;
    mismatches += fmt::format("{}atom type {} has mass {:g}, but pair_coeff names it {} "
                              "(standard atomic mass {:g})",
                              mismatches.empty() ? "" : "; ", itype, mass, name, element_mass);
  }
  if (!mismatches.empty())
    error->warning(FLERR,
                   "pair_style nequip: {}: the element names in pair_coeff must follow the "
                   "order of the atom types; reorder them to match the data file's types",
                   mismatches);
}

/* ----------------------------------------------------------------------
   For each ghost atom that is a periodic image of an atom this rank owns:
   that atom and the integer image shift (ghost = owner + shift . cell);
   owner -1 for ghosts of atoms owned by other ranks. On one rank every ghost
   has an owner here.
------------------------------------------------------------------------- */

void PairNequIP::map_ghosts_to_owners()
{
  const int nlocal = atom->nlocal;
  const int nghost = atom->nghost;
  const tagint *tag = atom->tag;
  double **x = atom->x;
  const double *h_inv = domain->h_inv;

  ghost_owner.resize(nghost);
  ghost_shift.resize(3 * (size_t) nghost);
  for (int g = 0; g < nghost; g++) {
    const int j = nlocal + g;
    // the map prefers owned atoms over ghost copies of the same tag
    const int owner = atom->map(tag[j]);
    if (owner < 0 || owner >= nlocal)
      error->one(FLERR, "pair_style nequip: ghost atom {} has no owned copy on this rank", tag[j]);
    const double dx = x[j][0] - x[owner][0];
    const double dy = x[j][1] - x[owner][1];
    const double dz = x[j][2] - x[owner][2];
    const double fractional[3] = {h_inv[0] * dx + h_inv[5] * dy + h_inv[4] * dz,
                                  h_inv[1] * dy + h_inv[3] * dz, h_inv[2] * dz};
    for (int k = 0; k < 3; k++) {
      const double shift = std::nearbyint(fractional[k]);
      if (std::fabs(fractional[k] - shift) > SHIFT_TOLERANCE)
        error->one(FLERR, "pair_style nequip: ghost atom {} is not a periodic image of its owner",
                   tag[j]);
      ghost_shift[3 * (size_t) g + k] = shift;
    }
    ghost_owner[g] = owner;
  }
}

/* ----------------------------------------------------------------------
   A new node for atom_index, of model type mtype
------------------------------------------------------------------------- */

int PairNequIP::add_node(int atom_index, int mtype)
{
  const int node = (int) atom_of_node.size();
  node_of_atom[atom_index] = node;
  atom_of_node.push_back(atom_index);
  node_type.push_back(mtype);
  const double *xi = atom->x[atom_index];
  node_pos.insert(node_pos.end(), xi, xi + 3);
  return node;
}

/* ----------------------------------------------------------------------
   Whether neighbor j of atom i (of model type itype) is an edge of the
   model: j of a non-NULL type within the cutoff of (type i, type j)
------------------------------------------------------------------------- */

bool PairNequIP::is_edge(int i, int itype, int j) const
{
  const int jtype = model_type[atom->type[j]];
  if (jtype < 0) return false;
  double **x = atom->x;
  const double dx = x[j][0] - x[i][0];
  const double dy = x[j][1] - x[i][1];
  const double dz = x[j][2] - x[i][2];
  return dx * dx + dy * dy + dz * dz < model_cutsq[itype * num_model_types + jtype];
}

/* ----------------------------------------------------------------------
   The model's graph on one rank: the owned atoms of non-NULL types, and the
   edges of their full neighbor lists (center i, neighbor j, |r_ij| < cutoff
   of (type i, type j)). Every ghost is an image of an owned atom and is
   folded onto it: the edge goes to the owned atom's node with the ghost's
   image shift, so the model sees the periodic system as ASE does
   (FILE_CONTRACT §1).
------------------------------------------------------------------------- */

void PairNequIP::build_graph()
{
  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;
  const int *type = atom->type;
  const int *numneigh = list->numneigh;
  int **firstneigh = list->firstneigh;

  node_of_atom.assign(nall, -1);
  atom_of_node.clear();
  node_pos.clear();
  node_type.clear();
  edge_index.clear();
  edge_neighbor.clear();
  edge_cell_shift.clear();

  for (int i = 0; i < nlocal; i++) {
    const int mtype = model_type[type[i]];
    if (mtype >= 0) add_node(i, mtype);
  }
  num_local_nodes = (int) atom_of_node.size();
  map_ghosts_to_owners();

  for (int inode = 0; inode < num_local_nodes; inode++) {
    const int i = atom_of_node[inode];
    const int itype = (int) node_type[inode];
    const int *jlist = firstneigh[i];
    for (int jj = 0; jj < numneigh[i]; jj++) {
      const int j = jlist[jj] & NEIGHMASK;
      if (!is_edge(i, itype, j)) continue;
      const int owner = j < nlocal ? j : ghost_owner[j - nlocal];
      const double *shift = j < nlocal ? ZERO_SHIFT : &ghost_shift[3 * (size_t) (j - nlocal)];
      edge_cell_shift.insert(edge_cell_shift.end(), shift, shift + 3);
      edge_index.push_back(inode);
      edge_neighbor.push_back(node_of_atom[owner]);
    }
  }
  // edge_index is (2, E), row-major: the centers, then the neighbors
  edge_index.insert(edge_index.end(), edge_neighbor.begin(), edge_neighbor.end());

  node_is_local.assign(atom_of_node.size(), 1);
}

/* ----------------------------------------------------------------------
   The graph of exchange mode: every owned and ghost atom is a node (node =
   atom index; atoms of NULL types get type 0, no edges and no energy), the
   edges are those of the owned atoms (center i owned, |r_ij| < cutoff of
   (type i, type j)), and the ghosts stand at their own positions: their
   features come from their owners between layers, not from edges here.
------------------------------------------------------------------------- */

void PairNequIP::build_exchange_graph()
{
  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;
  const int *type = atom->type;
  double **x = atom->x;
  const int inum = list->inum;
  const int *ilist = list->ilist;
  const int *numneigh = list->numneigh;
  int **firstneigh = list->firstneigh;

  atom_of_node.resize(nall);
  node_type.resize(nall);
  node_is_local.assign(nall, 0);
  node_pos.assign(nall > 0 ? &x[0][0] : nullptr, nall > 0 ? &x[0][0] + 3 * (size_t) nall : nullptr);
  num_local_nodes = 0;
  for (int i = 0; i < nall; i++) {
    const int mtype = model_type[type[i]];
    atom_of_node[i] = i;
    node_type[i] = mtype >= 0 ? mtype : 0;
    if (i < nlocal && mtype >= 0) {
      node_is_local[i] = 1;
      num_local_nodes++;
    }
  }

  edge_index.clear();
  edge_neighbor.clear();
  for (int ii = 0; ii < inum; ii++) {
    const int i = ilist[ii];
    const int itype = model_type[type[i]];
    if (itype < 0) continue;
    const int *jlist = firstneigh[i];
    for (int jj = 0; jj < numneigh[i]; jj++) {
      const int j = jlist[jj] & NEIGHMASK;
      if (!is_edge(i, itype, j)) continue;
      edge_index.push_back(i);
      edge_neighbor.push_back(j);
    }
  }
  edge_index.insert(edge_index.end(), edge_neighbor.begin(), edge_neighbor.end());
}
