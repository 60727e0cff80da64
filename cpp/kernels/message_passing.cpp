// CPU kernels of the message passing (python/nequip/nn/message_passing.py): its node sums and
// their first and second derivatives, registered with torch as nequip::message_forward_v1,
// nequip::message_backward_v1 and nequip::message_double_backward_v1 when the runtime library
// (of which this file is part) loads: in Python by importing nequip._kernels or nequip._runtime.
// Eager training calls all three; compiled files made without --portable call the first two
// (nequip.compile, which records them in the file's metadata as nequip_operators).
//
// Versions. An operator's name carries the version of its arguments and meaning (_v1). The Python
// code that calls them, and the copy of that code interned in every package, checks that the
// installed library registers the names and schemas it was written for and otherwise computes
// the same with torch operations (message_passing.py, KERNEL_VERSION; packages record it in their
// metadata as versions: nequip_kernels). So a change of an operator's arguments or meaning is a
// new name (_v2), never an edit of a registered one, and the library keeps registering the
// versions that existing packages call. Version 1 is also registered under the unversioned
// names that packages made before versioning call (without a check).
//
// All work on one "run": the path groups of one input irrep (PathRun in message_passing.py).
// Per edge e with center c and neighbor j, for rows r (path, output component) and channels u:
//
//   P[r,u] = sum_i a[e,i,r] x[j,i,u]         (the products; a = edge harmonics @ coefficients)
//   R[r,u] = g[c,r,u] w[e,p(r),u]            (the output gradient weighted by the path's weight)
//
// message_forward returns the node sums, out[c,r,u] = sum over c's edges of w[e,p(r),u] P[r,u]:
// one task per range of centers (the edges ordered by center by a counting sort), each center's
// rows summed in place, so that no per-edge message is written out and no two threads add to
// one row.
//
// message_backward returns the first derivatives of the node sums:
//   gw[e,p,u] = sum_{r in p} g[c,r,u] P[r,u]   (by the path weights)
//   ga[e,i,r] = sum_u x[j,i,u] R[r,u]          (by a)
//   gx[e,i,u] = sum_r a[e,i,r] R[r,u]          (by the neighbor's features, before the neighbor sum)
//
// and message_double_backward the vector-Jacobian product of those with cotangents
// (hw, ha, hx), which is what training's loss on forces differentiates:
//   dP = hw[p(r)] g,  dR = sum_i (x ha[i] + a[i] hx[i])
//   dg[e,r,u] = hw[p(r),u] P[r,u] + dR[r,u] w[p(r),u]    (per edge, summed at centers by the caller)
//   dw[e,p,u] = sum_{r in p} dR[r,u] g[c,r,u]
//   da[e,i,r] = sum_u (x[j,i,u] dP[r,u] + hx[i,u] R[r,u])
//   dx[e,i,u] = sum_r (a[i,r] dP[r,u] + ha[i,r] R[r,u])  (per edge, summed at neighbors by the caller)
//
// Everything per edge stays in a few rows of scratch memory (only dg, which the caller sums at
// the centers, is written out as a full (edges, rows, channels) tensor): the torch version of the same
// (bmm, products, concatenations) writes and reads tensors of (edges, rows, channels) several
// times over, and its speed is that of main memory. Loops over channels are innermost and
// vectorised; the functions are compiled for AVX-512, AVX2 and baseline x86-64, chosen at load,
// each also for 16, 32 and 64 channels.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

namespace {

using at::Tensor;

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define NEQUIP_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define NEQUIP_VECTOR_CLONES
#endif
// the per-edge code is compiled inside each clone, for its instruction set
#define NEQUIP_INLINE inline __attribute__((always_inline))

// The shapes of one run and the row -> path map.
struct Run {
  int64_t d1, rows, paths, mul;
  const int64_t* row_path;
};

// The node sums of centers [begin, end); edge_order lists the edges by center, those of center c
// at [edge_start[c], edge_start[c + 1]).
template <typename T, int MUL>
NEQUIP_INLINE void forward_nodes(const T* a, const T* x, const T* w, const int64_t* neighbor,
                                 const int64_t* edge_start, const int64_t* edge_order, const Run& run, T* out,
                                 int64_t begin, int64_t end, T* scratch) {
  const int64_t mul = MUL > 0 ? MUL : run.mul, d1 = run.d1, rows = run.rows;
  T* p_row = scratch;
  for (int64_t c = begin; c < end; ++c) {
    T* out_c = out + c * rows * mul;
    std::fill(out_c, out_c + rows * mul, T(0));
    for (int64_t k = edge_start[c]; k < edge_start[c + 1]; ++k) {
      const int64_t e = edge_order[k];
      const T* a_e = a + e * d1 * rows;
      const T* x_j = x + neighbor[e] * d1 * mul;
      const T* w_e = w + e * run.paths * mul;
      for (int64_t r = 0; r < rows; ++r) {
        {
          const T a0 = a_e[r];
#pragma omp simd
          for (int64_t u = 0; u < mul; ++u) p_row[u] = a0 * x_j[u];
        }
        for (int64_t i = 1; i < d1; ++i) {
          const T ai = a_e[i * rows + r];
          const T* x_i = x_j + i * mul;
#pragma omp simd
          for (int64_t u = 0; u < mul; ++u) p_row[u] += ai * x_i[u];
        }
        const T* w_row = w_e + run.row_path[r] * mul;
        T* out_row = out_c + r * mul;
#pragma omp simd
        for (int64_t u = 0; u < mul; ++u) out_row[u] += w_row[u] * p_row[u];
      }
    }
  }
}

// Per-edge inputs: pointers to its a (d1, rows), its neighbor's x (d1, mul), its center's
// g (rows, mul) and its weights w (paths, mul).
template <typename T>
struct EdgeInputs {
  const T *a, *x, *g, *w;
};

template <typename T>
NEQUIP_INLINE EdgeInputs<T> edge_inputs(const T* a, const T* x, const T* g, const T* w, const int64_t* center,
                                 const int64_t* neighbor, const Run& run, int64_t e) {
  return {a + e * run.d1 * run.rows, x + neighbor[e] * run.d1 * run.mul, g + center[e] * run.rows * run.mul,
          w + e * run.paths * run.mul};
}

// MUL: the channels, where known at compile time (the common widths, whose loops the compiler
// then unrolls into whole vectors), or 0 for run.mul.

// P and R of row r into p_row and r_row (mul each).
template <typename T, int MUL>
NEQUIP_INLINE void products_row(const EdgeInputs<T>& in, const Run& run, int64_t r, T* p_row, T* r_row) {
  const int64_t mul = MUL > 0 ? MUL : run.mul;
  const T* w_row = in.w + run.row_path[r] * mul;
  const T* g_row = in.g + r * mul;
  {
    const T a0 = in.a[r];
#pragma omp simd
    for (int64_t u = 0; u < mul; ++u) p_row[u] = a0 * in.x[u];
  }
  for (int64_t i = 1; i < run.d1; ++i) {
    const T ai = in.a[i * run.rows + r];
    const T* x_i = in.x + i * mul;
#pragma omp simd
    for (int64_t u = 0; u < mul; ++u) p_row[u] += ai * x_i[u];
  }
#pragma omp simd
  for (int64_t u = 0; u < mul; ++u) r_row[u] = g_row[u] * w_row[u];
}

template <typename T, int MUL>
NEQUIP_INLINE void backward_edges(const T* a, const T* x, const T* g, const T* w, const int64_t* center,
                           const int64_t* neighbor, const Run& run, T* gw, T* ga, T* gx, int64_t begin, int64_t end,
                           T* scratch) {
  const int64_t mul = MUL > 0 ? MUL : run.mul, d1 = run.d1, rows = run.rows;
  T* p_row = scratch;
  T* r_row = scratch + mul;
  for (int64_t e = begin; e < end; ++e) {
    const EdgeInputs<T> in = edge_inputs(a, x, g, w, center, neighbor, run, e);
    T* gw_e = gw + e * run.paths * mul;
    T* ga_e = ga + e * d1 * rows;
    T* gx_e = gx + e * d1 * mul;
    std::fill(gw_e, gw_e + run.paths * mul, T(0));
    std::fill(gx_e, gx_e + d1 * mul, T(0));
    for (int64_t r = 0; r < rows; ++r) {
      products_row<T, MUL>(in, run, r, p_row, r_row);
      const T* g_row = in.g + r * mul;
      T* gw_row = gw_e + run.row_path[r] * mul;
#pragma omp simd
      for (int64_t u = 0; u < mul; ++u) gw_row[u] += g_row[u] * p_row[u];
      for (int64_t i = 0; i < d1; ++i) {
        const T* x_i = in.x + i * mul;
        T dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int64_t u = 0; u < mul; ++u) dot += x_i[u] * r_row[u];
        ga_e[i * rows + r] = dot;
        const T ai = in.a[i * rows + r];
        T* gx_i = gx_e + i * mul;
#pragma omp simd
        for (int64_t u = 0; u < mul; ++u) gx_i[u] += ai * r_row[u];
      }
    }
  }
}

template <typename T, int MUL>
NEQUIP_INLINE void double_backward_edges(const T* a, const T* x, const T* g, const T* w, const int64_t* center,
                                  const int64_t* neighbor, const Run& run, const T* hw, const T* ha, const T* hx,
                                  T* da, T* dx, T* dg, T* dw, int64_t begin, int64_t end, T* scratch) {
  const int64_t mul = MUL > 0 ? MUL : run.mul, d1 = run.d1, rows = run.rows;
  T* p_row = scratch;
  T* r_row = scratch + mul;
  T* dp_row = scratch + 2 * mul;
  T* dr_row = scratch + 3 * mul;
  for (int64_t e = begin; e < end; ++e) {
    const EdgeInputs<T> in = edge_inputs(a, x, g, w, center, neighbor, run, e);
    const T* hw_e = hw + e * run.paths * mul;
    const T* ha_e = ha + e * d1 * rows;
    const T* hx_e = hx + e * d1 * mul;
    T* da_e = da + e * d1 * rows;
    T* dx_e = dx + e * d1 * mul;
    T* dg_e = dg + e * rows * mul;
    T* dw_e = dw + e * run.paths * mul;
    std::fill(dx_e, dx_e + d1 * mul, T(0));
    std::fill(dw_e, dw_e + run.paths * mul, T(0));
    for (int64_t r = 0; r < rows; ++r) {
      products_row<T, MUL>(in, run, r, p_row, r_row);
      const int64_t p = run.row_path[r];
      const T* g_row = in.g + r * mul;
      const T* w_row = in.w + p * mul;
      const T* hw_row = hw_e + p * mul;
#pragma omp simd
      for (int64_t u = 0; u < mul; ++u) {
        dp_row[u] = hw_row[u] * g_row[u];
        dr_row[u] = 0;
      }
      for (int64_t i = 0; i < d1; ++i) {
        const T ha_ir = ha_e[i * rows + r], a_ir = in.a[i * rows + r];
        const T* x_i = in.x + i * mul;
        const T* hx_i = hx_e + i * mul;
#pragma omp simd
        for (int64_t u = 0; u < mul; ++u) dr_row[u] += ha_ir * x_i[u] + a_ir * hx_i[u];
      }
      T* dg_row = dg_e + r * mul;
      T* dw_row = dw_e + p * mul;
#pragma omp simd
      for (int64_t u = 0; u < mul; ++u) {
        dg_row[u] = hw_row[u] * p_row[u] + dr_row[u] * w_row[u];
        dw_row[u] += dr_row[u] * g_row[u];
      }
      for (int64_t i = 0; i < d1; ++i) {
        const T* x_i = in.x + i * mul;
        const T* hx_i = hx_e + i * mul;
        T dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int64_t u = 0; u < mul; ++u) dot += x_i[u] * dp_row[u] + hx_i[u] * r_row[u];
        da_e[i * rows + r] = dot;
        const T ha_ir = ha_e[i * rows + r], a_ir = in.a[i * rows + r];
        T* dx_i = dx_e + i * mul;
#pragma omp simd
        for (int64_t u = 0; u < mul; ++u) dx_i[u] += a_ir * dp_row[u] + ha_ir * r_row[u];
      }
    }
  }
}

// One compiled copy per instruction set (target_clones cannot clone templates) and channel width.
#define NEQUIP_INSTANTIATE(T, MUL)                                                                                   \
  NEQUIP_VECTOR_CLONES void forward_kernel_##MUL(const T* a, const T* x, const T* w, const int64_t* neighbor,        \
                                                 const int64_t* edge_start, const int64_t* edge_order,              \
                                                 const Run& run, T* out, int64_t begin, int64_t end, T* scratch) {  \
    forward_nodes<T, MUL>(a, x, w, neighbor, edge_start, edge_order, run, out, begin, end, scratch);                 \
  }                                                                                                                  \
  NEQUIP_VECTOR_CLONES void backward_kernel_##MUL(const T* a, const T* x, const T* g, const T* w,                    \
                                                  const int64_t* center, const int64_t* neighbor, const Run& run,   \
                                                  T* gw, T* ga, T* gx, int64_t begin, int64_t end, T* scratch) {     \
    backward_edges<T, MUL>(a, x, g, w, center, neighbor, run, gw, ga, gx, begin, end, scratch);                      \
  }                                                                                                                  \
  NEQUIP_VECTOR_CLONES void double_backward_kernel_##MUL(                                                            \
      const T* a, const T* x, const T* g, const T* w, const int64_t* center, const int64_t* neighbor, const Run& run, \
      const T* hw, const T* ha, const T* hx, T* da, T* dx, T* dg, T* dw, int64_t begin, int64_t end, T* scratch) {   \
    double_backward_edges<T, MUL>(a, x, g, w, center, neighbor, run, hw, ha, hx, da, dx, dg, dw, begin, end,         \
                                  scratch);                                                                          \
  }
#define NEQUIP_INSTANTIATE_WIDTHS(T) \
  NEQUIP_INSTANTIATE(T, 0)           \
  NEQUIP_INSTANTIATE(T, 16)          \
  NEQUIP_INSTANTIATE(T, 32)          \
  NEQUIP_INSTANTIATE(T, 64)
NEQUIP_INSTANTIATE_WIDTHS(float)
NEQUIP_INSTANTIATE_WIDTHS(double)
#undef NEQUIP_INSTANTIATE_WIDTHS
#undef NEQUIP_INSTANTIATE

template <typename T>
void forward_kernel(const T* a, const T* x, const T* w, const int64_t* neighbor, const int64_t* edge_start,
                    const int64_t* edge_order, const Run& run, T* out, int64_t begin, int64_t end, T* scratch) {
  switch (run.mul) {
    case 16: return forward_kernel_16(a, x, w, neighbor, edge_start, edge_order, run, out, begin, end, scratch);
    case 32: return forward_kernel_32(a, x, w, neighbor, edge_start, edge_order, run, out, begin, end, scratch);
    case 64: return forward_kernel_64(a, x, w, neighbor, edge_start, edge_order, run, out, begin, end, scratch);
    default: return forward_kernel_0(a, x, w, neighbor, edge_start, edge_order, run, out, begin, end, scratch);
  }
}

template <typename T>
void backward_kernel(const T* a, const T* x, const T* g, const T* w, const int64_t* center, const int64_t* neighbor,
                     const Run& run, T* gw, T* ga, T* gx, int64_t begin, int64_t end, T* scratch) {
  switch (run.mul) {
    case 16: return backward_kernel_16(a, x, g, w, center, neighbor, run, gw, ga, gx, begin, end, scratch);
    case 32: return backward_kernel_32(a, x, g, w, center, neighbor, run, gw, ga, gx, begin, end, scratch);
    case 64: return backward_kernel_64(a, x, g, w, center, neighbor, run, gw, ga, gx, begin, end, scratch);
    default: return backward_kernel_0(a, x, g, w, center, neighbor, run, gw, ga, gx, begin, end, scratch);
  }
}

template <typename T>
void double_backward_kernel(const T* a, const T* x, const T* g, const T* w, const int64_t* center,
                            const int64_t* neighbor, const Run& run, const T* hw, const T* ha, const T* hx, T* da,
                            T* dx, T* dg, T* dw, int64_t begin, int64_t end, T* scratch) {
  switch (run.mul) {
    case 16:
      return double_backward_kernel_16(a, x, g, w, center, neighbor, run, hw, ha, hx, da, dx, dg, dw, begin, end,
                                       scratch);
    case 32:
      return double_backward_kernel_32(a, x, g, w, center, neighbor, run, hw, ha, hx, da, dx, dg, dw, begin, end,
                                       scratch);
    case 64:
      return double_backward_kernel_64(a, x, g, w, center, neighbor, run, hw, ha, hx, da, dx, dg, dw, begin, end,
                                       scratch);
    default:
      return double_backward_kernel_0(a, x, g, w, center, neighbor, run, hw, ha, hx, da, dx, dg, dw, begin, end,
                                      scratch);
  }
}

// Edges per task: enough work to amortise a task, enough tasks for the threads.
int64_t grain(const Run& run) { return std::max<int64_t>(1, 65536 / std::max<int64_t>(1, run.rows * run.d1 * run.mul)); }

// `op` names the operator in the error messages.
void check_shape(const char* op, const Tensor& t, const char* name, std::initializer_list<int64_t> shape,
                 const Tensor& like) {
  TORCH_CHECK(t.sizes() == at::IntArrayRef(shape), op, ": ", name, " has shape ", t.sizes(), ", expected ",
              at::IntArrayRef(shape));
  TORCH_CHECK(t.is_contiguous() && t.device().is_cpu() && t.scalar_type() == like.scalar_type(), op, ": ", name,
              " must be a contiguous CPU tensor of dtype ", like.scalar_type());
}

// Checks a, x, w, g (where given: the forward has none), the indices and the row -> path map;
// returns the run's shapes.
Run check_run(const char* op, const Tensor& a, const Tensor& x, const Tensor* g, const Tensor& w,
              const Tensor& center, const Tensor& neighbor, const Tensor& row_path) {
  TORCH_CHECK(a.dim() == 3 && x.dim() == 3 && (g == nullptr || g->dim() == 3) && w.dim() == 3,
              op, ": a, x, g and w must be 3-dimensional");
  TORCH_CHECK(a.scalar_type() == at::kFloat || a.scalar_type() == at::kDouble,
              op, ": float32 or float64 expected, got ", a.scalar_type());
  const int64_t edges = a.size(0), d1 = a.size(1), rows = a.size(2), nodes = x.size(0), mul = x.size(2);
  const int64_t paths = w.size(1);
  check_shape(op, a, "a", {edges, d1, rows}, a);
  check_shape(op, x, "x", {nodes, d1, mul}, a);
  if (g != nullptr) check_shape(op, *g, "g", {nodes, rows, mul}, a);
  check_shape(op, w, "w", {edges, paths, mul}, a);
  for (const Tensor* index : {&center, &neighbor}) {
    TORCH_CHECK(index->sizes() == at::IntArrayRef{edges} && index->scalar_type() == at::kLong &&
                    index->is_contiguous() && index->device().is_cpu(),
                op, ": center and neighbor indices must be contiguous int64 CPU tensors of ",
                edges, " edges");
  }
  TORCH_CHECK(row_path.sizes() == at::IntArrayRef{rows} && row_path.scalar_type() == at::kLong &&
                  row_path.is_contiguous(),
              op, ": row_path must be a contiguous int64 tensor of ", rows, " rows");
  // an index out of range would read outside the tensors: refused, not undefined
  if (edges > 0) {
    for (const Tensor* index : {&center, &neighbor}) {
      TORCH_CHECK(index->min().item<int64_t>() >= 0 && index->max().item<int64_t>() < nodes,
                  op, ": an edge index is outside [0, ", nodes, ")");
    }
  }
  if (rows > 0) {
    TORCH_CHECK(row_path.min().item<int64_t>() >= 0 && row_path.max().item<int64_t>() < paths,
                op, ": row_path is outside [0, ", paths, ")");
  }
  return {d1, rows, paths, mul, row_path.data_ptr<int64_t>()};
}

Tensor message_forward(const Tensor& a, const Tensor& x, const Tensor& w, const Tensor& center,
                       const Tensor& neighbor, const Tensor& row_path) {
  const Run run = check_run("nequip::message_forward_v1", a, x, nullptr, w, center, neighbor, row_path);
  const int64_t edges = a.size(0), nodes = x.size(0);
  Tensor out = at::empty({nodes, run.rows, run.mul}, a.options());
  // the edges by center: a counting sort, stable (each center's edges summed in their order)
  std::vector<int64_t> edge_start(nodes + 1, 0), edge_order(edges);
  const int64_t* c_p = center.data_ptr<int64_t>();
  for (int64_t e = 0; e < edges; ++e) ++edge_start[c_p[e] + 1];
  for (int64_t c = 0; c < nodes; ++c) edge_start[c + 1] += edge_start[c];
  {
    std::vector<int64_t> next(edge_start.begin(), edge_start.end() - 1);
    for (int64_t e = 0; e < edges; ++e) edge_order[next[c_p[e]]++] = e;
  }
  // centers per task: about as much work per task as the backward's edges per task
  const int64_t edges_per_node = std::max<int64_t>(1, edges / std::max<int64_t>(1, nodes));
  const int64_t node_grain = std::max<int64_t>(1, grain(run) / edges_per_node);
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "message_forward", [&] {
    const scalar_t *a_p = a.data_ptr<scalar_t>(), *x_p = x.data_ptr<scalar_t>(), *w_p = w.data_ptr<scalar_t>();
    const int64_t* n_p = neighbor.data_ptr<int64_t>();
    scalar_t* out_p = out.data_ptr<scalar_t>();
    at::parallel_for(0, nodes, node_grain, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> scratch(run.mul);
      forward_kernel(a_p, x_p, w_p, n_p, edge_start.data(), edge_order.data(), run, out_p, begin, end,
                     scratch.data());
    });
  });
  return out;
}

std::tuple<Tensor, Tensor, Tensor> message_backward(const Tensor& a, const Tensor& x, const Tensor& g, const Tensor& w,
                                                    const Tensor& center, const Tensor& neighbor,
                                                    const Tensor& row_path) {
  const Run run = check_run("nequip::message_backward_v1", a, x, &g, w, center, neighbor, row_path);
  const int64_t edges = a.size(0);
  Tensor gw = at::empty({edges, run.paths, run.mul}, a.options());
  Tensor ga = at::empty({edges, run.d1, run.rows}, a.options());
  Tensor gx = at::empty({edges, run.d1, run.mul}, a.options());
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "message_backward", [&] {
    const scalar_t *a_p = a.data_ptr<scalar_t>(), *x_p = x.data_ptr<scalar_t>(), *g_p = g.data_ptr<scalar_t>(),
                   *w_p = w.data_ptr<scalar_t>();
    const int64_t *c_p = center.data_ptr<int64_t>(), *n_p = neighbor.data_ptr<int64_t>();
    scalar_t *gw_p = gw.data_ptr<scalar_t>(), *ga_p = ga.data_ptr<scalar_t>(), *gx_p = gx.data_ptr<scalar_t>();
    at::parallel_for(0, edges, grain(run), [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> scratch(2 * run.mul);
      backward_kernel(a_p, x_p, g_p, w_p, c_p, n_p, run, gw_p, ga_p, gx_p, begin, end, scratch.data());
    });
  });
  return {gw, ga, gx};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> message_double_backward(const Tensor& a, const Tensor& x, const Tensor& g,
                                                                   const Tensor& w, const Tensor& center,
                                                                   const Tensor& neighbor, const Tensor& row_path,
                                                                   const Tensor& hw, const Tensor& ha,
                                                                   const Tensor& hx) {
  const char* op = "nequip::message_double_backward_v1";
  const Run run = check_run(op, a, x, &g, w, center, neighbor, row_path);
  const int64_t edges = a.size(0);
  check_shape(op, hw, "the cotangent of gw", {edges, run.paths, run.mul}, a);
  check_shape(op, ha, "the cotangent of ga", {edges, run.d1, run.rows}, a);
  check_shape(op, hx, "the cotangent of gx", {edges, run.d1, run.mul}, a);
  Tensor da = at::empty({edges, run.d1, run.rows}, a.options());
  Tensor dx = at::empty({edges, run.d1, run.mul}, a.options());
  Tensor dg = at::empty({edges, run.rows, run.mul}, a.options());
  Tensor dw = at::empty({edges, run.paths, run.mul}, a.options());
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "message_double_backward", [&] {
    const scalar_t *a_p = a.data_ptr<scalar_t>(), *x_p = x.data_ptr<scalar_t>(), *g_p = g.data_ptr<scalar_t>(),
                   *w_p = w.data_ptr<scalar_t>();
    const scalar_t *hw_p = hw.data_ptr<scalar_t>(), *ha_p = ha.data_ptr<scalar_t>(), *hx_p = hx.data_ptr<scalar_t>();
    const int64_t *c_p = center.data_ptr<int64_t>(), *n_p = neighbor.data_ptr<int64_t>();
    scalar_t *da_p = da.data_ptr<scalar_t>(), *dx_p = dx.data_ptr<scalar_t>(), *dg_p = dg.data_ptr<scalar_t>(),
             *dw_p = dw.data_ptr<scalar_t>();
    at::parallel_for(0, edges, grain(run), [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> scratch(4 * run.mul);
      double_backward_kernel(a_p, x_p, g_p, w_p, c_p, n_p, run, hw_p, ha_p, hx_p, da_p, dx_p, dg_p, dw_p, begin, end,
                             scratch.data());
    });
  });
  return {da, dx, dg, dw};
}

}  // namespace

namespace nequip {
// The highest version of the operators registered below (their names' _v suffix).
int message_passing_kernels_version() { return 1; }
}  // namespace nequip

#define NEQUIP_MESSAGE_FORWARD_V1_ARGUMENTS \
  "(Tensor a, Tensor x, Tensor w, Tensor center, Tensor neighbor, Tensor row_path) -> Tensor"
#define NEQUIP_MESSAGE_BACKWARD_V1_ARGUMENTS \
  "(Tensor a, Tensor x, Tensor g, Tensor w, Tensor center, Tensor neighbor, Tensor row_path) -> (Tensor, Tensor, Tensor)"
#define NEQUIP_MESSAGE_DOUBLE_BACKWARD_V1_ARGUMENTS                                                 \
  "(Tensor a, Tensor x, Tensor g, Tensor w, Tensor center, Tensor neighbor, Tensor row_path, Tensor hw, " \
  "Tensor ha, Tensor hx) -> (Tensor, Tensor, Tensor, Tensor)"

// A fragment: other libraries of the project may add operators to the namespace (TORCH_LIBRARY
// may define a namespace once per process).
TORCH_LIBRARY_FRAGMENT(nequip, m) {
  m.def("message_forward_v1" NEQUIP_MESSAGE_FORWARD_V1_ARGUMENTS);
  m.def("message_backward_v1" NEQUIP_MESSAGE_BACKWARD_V1_ARGUMENTS);
  m.def("message_double_backward_v1" NEQUIP_MESSAGE_DOUBLE_BACKWARD_V1_ARGUMENTS);
  // version 1 under the names of packages made before versioning
  m.def("message_backward" NEQUIP_MESSAGE_BACKWARD_V1_ARGUMENTS);
  m.def("message_double_backward" NEQUIP_MESSAGE_DOUBLE_BACKWARD_V1_ARGUMENTS);
}

TORCH_LIBRARY_IMPL(nequip, CPU, m) {
  m.impl("message_forward_v1", &message_forward);
  m.impl("message_backward_v1", &message_backward);
  m.impl("message_double_backward_v1", &message_double_backward);
  m.impl("message_backward", &message_backward);
  m.impl("message_double_backward", &message_double_backward);
}
