// The derivatives of the message passing's kernels (message_passing.cpp) for callers without
// Python: TorchScript files (.nequip.pth) differentiate their node sums by the autograd engine,
// which cannot run the Python autograd functions that eager code and AOTInductor's tracing use
// (python/nequip/nn/message_passing.py: _MessageSum, _RunBackward).
//
//   nequip::message_forward_v1:  differentiable by message_backward_v1, then neighbor sums
//   nequip::message_backward_v1: differentiable once more by message_double_backward_v1, then
//                                neighbor and center sums (training's loss on forces)
//
// A third derivative is refused with a message rather than computed as zero. The formulas are
// those of the Python functions above; tests/compile/test_kernel_files.py checks both against them.

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <tuple>

namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The kernels below autograd (the CPU kernels, or the shapes when traced).
Tensor forward_kernel(const Tensor& a, const Tensor& x, const Tensor& w, const Tensor& center,
                      const Tensor& neighbor, const Tensor& row_path) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("nequip::message_forward_v1", "")
                       .typed<Tensor(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                     const Tensor&, const Tensor&)>();
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  return op.call(a, x, w, center, neighbor, row_path);
}

std::tuple<Tensor, Tensor, Tensor> backward_kernel(const Tensor& a, const Tensor& x, const Tensor& g,
                                                   const Tensor& w, const Tensor& center,
                                                   const Tensor& neighbor, const Tensor& row_path) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("nequip::message_backward_v1", "")
                       .typed<std::tuple<Tensor, Tensor, Tensor>(
                           const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                           const Tensor&, const Tensor&)>();
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  return op.call(a, x, g, w, center, neighbor, row_path);
}

std::tuple<Tensor, Tensor, Tensor, Tensor> double_backward_kernel(
    const Tensor& a, const Tensor& x, const Tensor& g, const Tensor& w, const Tensor& center,
    const Tensor& neighbor, const Tensor& row_path, const Tensor& hw, const Tensor& ha, const Tensor& hx) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("nequip::message_double_backward_v1", "")
                       .typed<std::tuple<Tensor, Tensor, Tensor, Tensor>(
                           const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                           const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&)>();
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  return op.call(a, x, g, w, center, neighbor, row_path, hw, ha, hx);
}

// Per-edge rows (E, ...) summed into (nodes, ...) by index (E,): a scatter-add with the index
// expanded along the row, which torch's CPU kernel does by sorting the index once (as the Python
// code's _neighbor_sum). Differentiable: the second derivatives go through it.
Tensor sum_at(const Tensor& per_edge, const Tensor& index, int64_t nodes) {
  const Tensor rows = per_edge.flatten(1);
  std::vector<int64_t> shape = per_edge.sizes().vec();
  shape[0] = nodes;
  return at::zeros({nodes, rows.size(1)}, rows.options())
      .scatter_add(0, index.unsqueeze(1).expand_as(rows), rows)
      .view(shape);
}

// The first derivatives of one run's node sums: by the path weights (E, paths, mul), by A
// (E, d1, rows) and by the neighbor's features at each edge (E, d1, mul).
class RunBackward : public torch::autograd::Function<RunBackward> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& a, const Tensor& x, const Tensor& g,
                               const Tensor& w, const Tensor& center, const Tensor& neighbor,
                               const Tensor& row_path) {
    const Tensor ac = a.contiguous(), xc = x.contiguous(), gc = g.contiguous(), wc = w.contiguous();
    ctx->save_for_backward({ac, xc, gc, wc, center, neighbor, row_path});
    auto [gw, ga, gx] = backward_kernel(ac, xc, gc, wc, center, neighbor, row_path);
    return {gw, ga, gx};
  }

  static variable_list backward(AutogradContext* ctx, variable_list cotangents) {
    TORCH_CHECK(!at::GradMode::is_enabled(),
                "nequip::message_backward_v1 is differentiable once (forces and their training "
                "loss): a third derivative of the message passing's kernels is not provided; "
                "compile the file with --portable (in Python: the model's message_backend 'torch')");
    const variable_list saved = ctx->get_saved_variables();
    const Tensor &a = saved[0], &x = saved[1], &g = saved[2], &w = saved[3];
    const Tensor &center = saved[4], &neighbor = saved[5], &row_path = saved[6];
    // outputs that nothing used have no cotangent: zeros of their shapes
    const std::vector<int64_t> shapes[3] = {w.sizes().vec(), a.sizes().vec(), {a.size(0), a.size(1), x.size(2)}};
    Tensor h[3];
    for (int k = 0; k < 3; ++k) {
      h[k] = cotangents[k].defined() ? cotangents[k].contiguous() : at::zeros(shapes[k], a.options());
    }
    auto [da, dx_edge, dg_edge, dw] =
        double_backward_kernel(a, x, g, w, center, neighbor, row_path, h[0], h[1], h[2]);
    const int64_t nodes = x.size(0);
    return {da, sum_at(dx_edge, neighbor, nodes), sum_at(dg_edge, center, nodes), dw,
            Tensor(), Tensor(), Tensor()};
  }
};

// One run's node sums (N, rows, mul).
class MessageForward : public torch::autograd::Function<MessageForward> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& a, const Tensor& x, const Tensor& w,
                        const Tensor& center, const Tensor& neighbor, const Tensor& row_path) {
    const Tensor ac = a.contiguous(), xc = x.contiguous(), wc = w.contiguous();
    ctx->save_for_backward({ac, xc, wc, center, neighbor, row_path});
    return forward_kernel(ac, xc, wc, center, neighbor, row_path);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const variable_list saved = ctx->get_saved_variables();
    const Tensor &a = saved[0], &x = saved[1], &w = saved[2];
    const Tensor &center = saved[3], &neighbor = saved[4], &row_path = saved[5];
    const Tensor g = grad_out[0].defined()
                         ? grad_out[0]
                         : at::zeros({x.size(0), a.size(2), x.size(2)}, a.options());
    // differentiable once more where the graph is kept (create_graph)
    const variable_list grads = RunBackward::apply(a, x, g, w, center, neighbor, row_path);
    return {grads[1], sum_at(grads[2], neighbor, x.size(0)), grads[0], Tensor(), Tensor(), Tensor()};
  }
};

Tensor message_forward_autograd(const Tensor& a, const Tensor& x, const Tensor& w, const Tensor& center,
                                const Tensor& neighbor, const Tensor& row_path) {
  return MessageForward::apply(a, x, w, center, neighbor, row_path);
}

std::tuple<Tensor, Tensor, Tensor> message_backward_autograd(const Tensor& a, const Tensor& x, const Tensor& g,
                                                             const Tensor& w, const Tensor& center,
                                                             const Tensor& neighbor, const Tensor& row_path) {
  const variable_list grads = RunBackward::apply(a, x, g, w, center, neighbor, row_path);
  return {grads[0], grads[1], grads[2]};
}

}  // namespace

TORCH_LIBRARY_IMPL(nequip, Autograd, m) {
  m.impl("message_forward_v1", &message_forward_autograd);
  m.impl("message_backward_v1", &message_backward_autograd);
}
