/* ----------------------------------------------------------------------
   pair_style nequip: a compiled NequIP model evaluated through the nequip
   C++ runtime (cpp/include/nequip/runtime.h). Torch appears here only as
   the runtime's at::Tensor inputs (views of this style's buffers) and
   outputs; loading, checking and running the model is the runtime's job.

   Each step the owned atoms become the model's nodes and the full neighbour
   list becomes its edges. A ghost atom is folded onto its owner (atom->map
   of its tag) plus an integer image shift, so the model sees the periodic
   system exactly as the ASE calculator does (FILE_CONTRACT §1):
       edge vector = pos[j] - pos[i] + shift . cell,
   and returns per-atom energies, forces on owned atoms and the virial.
   Ghost atoms get no forces, so the result does not depend on newton_pair,
   and the virial is the model's, never virial_fdotr_compute().
------------------------------------------------------------------------- */

#include "pair_nequip.h"

#include "atom.h"
#include "comm.h"
#include "domain.h"
#include "error.h"
#include "force.h"
#include "memory.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "update.h"
#include "utils.h"

#include <nequip/runtime.h>

#include <ATen/ops/from_blob.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <string>

using namespace LAMMPS_NS;

// Ghosts are exact periodic images of their owners; a fractional shift further than this
// from an integer means the ghost is not one (a bug, not a user error).
static constexpr double SHIFT_TOLERANCE = 1.0e-6;

/* ---------------------------------------------------------------------- */

PairNequIP::PairNequIP(LAMMPS *lmp) : Pair(lmp), num_model_types(0)
{
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  // forces exist on owned atoms only, so the virial comes from the model (the strain
  // derivative of the energy), not from sum(f . r) over owned and ghost atoms
  no_virial_fdotr_compute = 1;
  centroidstressflag = CENTROID_NOTAVAIL;
}

/* ---------------------------------------------------------------------- */

PairNequIP::~PairNequIP()
{
  if (copymode) return;
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
  }
}

/* ---------------------------------------------------------------------- */

void PairNequIP::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);
  if (vflag_atom)
    error->all(FLERR,
               "pair_style nequip does not compute per-atom virials "
               "(needed by compute stress/atom)");

  build_graph();
  const int64_t num_nodes = (int64_t) node_type.size();
  if (num_nodes == 0) return;
  const int64_t num_edges = (int64_t) edge_cell_shift.size() / 3;

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
    in.edge_cell_shift = at::from_blob(edge_cell_shift.data(), {num_edges, 3}, f64);
    in.cell = at::from_blob(cell, {3, 3}, f64);
    out = model->compute(in);
  } catch (const std::exception &e) {
    error->one(FLERR, "pair_style nequip: evaluating model {} failed: {}", model->path(),
               e.what());
  }

  // tallies add to what other styles (hybrid/overlay) put there, never overwrite it

  const double *atomic_energy = out.atomic_energy.data_ptr<double>();
  const double *forces = out.forces.data_ptr<double>();
  double **f = atom->f;
  const int nlocal = atom->nlocal;
  for (int i = 0; i < nlocal; i++) {
    const int node = node_of_atom[i];
    if (node < 0) continue;
    f[i][0] += forces[3 * node + 0];
    f[i][1] += forces[3 * node + 1];
    f[i][2] += forces[3 * node + 2];
    if (eflag_atom) eatom[i] += atomic_energy[node];
  }

  if (eflag_global) eng_vdwl += out.total_energy;

  if (vflag_global) {
    if (!out.virial)
      error->one(FLERR, "pair_style nequip: model {} gives no virial for this box",
                 model->path());
    const double *w = out.virial->data_ptr<double>();    // (3, 3) row-major
    virial[0] += w[0];    // xx
    virial[1] += w[4];    // yy
    virial[2] += w[8];    // zz
    virial[3] += w[1];    // xy
    virial[4] += w[2];    // xz
    virial[5] += w[5];    // yz
  }
}

/* ----------------------------------------------------------------------
   pair_style nequip (no arguments)
------------------------------------------------------------------------- */

void PairNequIP::settings(int narg, char ** /*arg*/)
{
  if (narg != 0)
    error->all(FLERR, "Illegal pair_style nequip command: it takes no arguments, got {}", narg);
}

/* ----------------------------------------------------------------------
   pair_coeff * * MODEL NAME_1 ... NAME_ntypes
------------------------------------------------------------------------- */

void PairNequIP::coeff(int narg, char **arg)
{
  const int ntypes = atom->ntypes;
  if (narg < 3)
    error->all(FLERR, "Incorrect args for pair coefficients: expected "
                      "'pair_coeff * * MODEL.nequip.pt2|MODEL.nequip.pth NAME_1 ... NAME_{}'",
               ntypes);

  // load first, so that a failure leaves a previously set up pair style untouched
  std::unique_ptr<nequip::Model> loaded;
  try {
    loaded = std::make_unique<nequip::Model>(arg[2], "cpu");
  } catch (const std::exception &e) {
    // the runtime's messages name the file
    error->all(FLERR, "pair_style nequip cannot use the model: {}", e.what());
  }
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
    if (name == "NULL") continue;
    auto found = std::find(type_names.begin(), type_names.end(), name);
    if (found == type_names.end())
      error->all(FLERR, "pair_coeff: model {} has no type named '{}' (for atom type {}); its "
                        "types are: {}",
                 arg[2], name, itype, known_names);
    type_map[itype] = (int) (found - type_names.begin());
  }

  // cutoff of each (centre, neighbour) model type pair: per_edge_type_cutoff or r_max
  const int num_types = (int) loaded->num_types();
  std::vector<double> cutoff = loaded->per_edge_type_cutoff();
  if (cutoff.empty()) cutoff.assign((size_t) num_types * num_types, loaded->r_max());
  std::vector<double> cut_squared(cutoff.size());
  std::transform(cutoff.begin(), cutoff.end(), cut_squared.begin(),
                 [](double c) { return c * c; });

  if (!allocated) allocate();
  model = std::move(loaded);
  num_model_types = num_types;
  model_type = std::move(type_map);
  model_cutsq = std::move(cut_squared);

  for (int i = 1; i <= ntypes; i++)
    for (int j = i; j <= ntypes; j++)
      setflag[i][j] = (model_type[i] >= 0 && model_type[j] >= 0) ? 1 : 0;
}

/* ---------------------------------------------------------------------- */

void PairNequIP::init_style()
{
  if (comm->nprocs > 1)
    error->all(FLERR, "pair_style nequip currently runs on one MPI rank only");
  if (domain->dimension != 3) error->all(FLERR, "pair_style nequip requires a 3d system");
  if (strcmp(update->unit_style, "metal") != 0)
    error->all(FLERR, "pair_style nequip requires 'units metal' (NequIP models use eV and Angstrom)");
  if (atom->tag_enable == 0)
    error->all(FLERR, "pair_style nequip requires atom IDs: remove 'atom_modify id no'");
  if (atom->map_style == Atom::MAP_NONE)
    error->all(FLERR, "pair_style nequip requires an atom map: add 'atom_modify map yes' "
                      "before the simulation box is defined");

  // A full list of the owned atoms' neighbours is all the model needs: every edge is
  // centred on an owned atom, and ghosts are folded onto their owners in build_graph().
  neighbor->add_request(this, NeighConst::REQ_FULL);

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

  // LAMMPS' cutoffs are symmetric; build_graph() applies the model's per direction
  const int ti = model_type[i], tj = model_type[j];
  const double cutsq_ij = model_cutsq[ti * num_model_types + tj];
  const double cutsq_ji = model_cutsq[tj * num_model_types + ti];
  return std::sqrt(std::max(cutsq_ij, cutsq_ji));
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
   Owner (owned atom with the same tag) and integer image shift of every
   ghost: x_ghost = x_owner + shift . cell, solved with the inverse shape
   matrix as in Domain::x2lamda(). Non-periodic directions get no images,
   so their shifts are 0.
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
      error->one(FLERR, "pair_style nequip: ghost atom {} has no owned copy on this rank",
                 tag[j]);
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
   Nodes: owned atoms of non-NULL types. Edges: (i, owner of j, shift of j)
   for every neighbour j of i within the cutoff of their model types.
------------------------------------------------------------------------- */

void PairNequIP::build_graph()
{
  const int nlocal = atom->nlocal;
  const int *type = atom->type;
  double **x = atom->x;

  node_of_atom.resize(nlocal);
  node_pos.clear();
  node_type.clear();
  for (int i = 0; i < nlocal; i++) {
    const int mtype = model_type[type[i]];
    if (mtype < 0) {
      node_of_atom[i] = -1;
      continue;
    }
    node_of_atom[i] = (int) node_type.size();
    node_type.push_back(mtype);
    node_pos.insert(node_pos.end(), x[i], x[i] + 3);
  }

  map_ghosts_to_owners();

  edge_index.clear();
  edge_neighbour.clear();
  edge_cell_shift.clear();
  const int inum = list->inum;
  const int *ilist = list->ilist;
  const int *numneigh = list->numneigh;
  int **firstneigh = list->firstneigh;
  for (int ii = 0; ii < inum; ii++) {
    const int i = ilist[ii];
    const int inode = node_of_atom[i];
    if (inode < 0) continue;
    const int itype = (int) node_type[inode];
    const int *jlist = firstneigh[i];
    for (int jj = 0; jj < numneigh[i]; jj++) {
      const int j = jlist[jj] & NEIGHMASK;
      const bool is_ghost = j >= nlocal;
      const int owner = is_ghost ? ghost_owner[j - nlocal] : j;
      const int jnode = node_of_atom[owner];
      if (jnode < 0) continue;
      const int jtype = (int) node_type[jnode];

      const double dx = x[j][0] - x[i][0];
      const double dy = x[j][1] - x[i][1];
      const double dz = x[j][2] - x[i][2];
      if (dx * dx + dy * dy + dz * dz >= model_cutsq[itype * num_model_types + jtype]) continue;

      edge_index.push_back(inode);
      edge_neighbour.push_back(jnode);
      if (is_ghost) {
        const double *shift = &ghost_shift[3 * (size_t) (j - nlocal)];
        edge_cell_shift.insert(edge_cell_shift.end(), shift, shift + 3);
      } else {
        edge_cell_shift.insert(edge_cell_shift.end(), {0.0, 0.0, 0.0});
      }
    }
  }
  // edge_index is (2, E), row-major: the centres, then the neighbours
  edge_index.insert(edge_index.end(), edge_neighbour.begin(), edge_neighbour.end());
}
