// Swish, x * sigmoid(beta * x), as a custom operator `zoo::swish` with its backward `zoo::swish_backward`.
//
// Built on first use by zoo/layers/fused_swish.py (torch.utils.cpp_extension.load), which also registers the
// autograd formula and the fake (meta) kernels that torch.compile traces with. Both kernels are one pass over
// contiguous memory, float32 and float64, CPU only.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <cmath>

namespace zoo {

at::Tensor swish_cpu(const at::Tensor& x, double beta) {
  TORCH_CHECK(x.is_floating_point(), "zoo::swish expects a float tensor, got ", x.scalar_type());
  const at::Tensor input = x.contiguous();
  at::Tensor out = at::empty_like(input);
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "zoo::swish", [&] {
    const scalar_t* in = input.data_ptr<scalar_t>();
    scalar_t* y = out.data_ptr<scalar_t>();
    const scalar_t b = static_cast<scalar_t>(beta);
    at::parallel_for(0, input.numel(), 2048, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        y[i] = in[i] / (scalar_t(1) + std::exp(-b * in[i]));
      }
    });
  });
  return out;
}

// d/dx x s(bx) = s + b x s (1 - s), with s = sigmoid(b x): recomputed from x rather than saved.
at::Tensor swish_backward_cpu(const at::Tensor& grad, const at::Tensor& x, double beta) {
  TORCH_CHECK(grad.sizes() == x.sizes(), "zoo::swish_backward: grad and x differ in shape");
  const at::Tensor g = grad.contiguous().to(x.scalar_type());
  const at::Tensor input = x.contiguous();
  at::Tensor out = at::empty_like(input);
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "zoo::swish_backward", [&] {
    const scalar_t* in = input.data_ptr<scalar_t>();
    const scalar_t* go = g.data_ptr<scalar_t>();
    scalar_t* gx = out.data_ptr<scalar_t>();
    const scalar_t b = static_cast<scalar_t>(beta);
    at::parallel_for(0, input.numel(), 2048, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const scalar_t s = scalar_t(1) / (scalar_t(1) + std::exp(-b * in[i]));
        gx[i] = go[i] * (s + b * in[i] * s * (scalar_t(1) - s));
      }
    });
  });
  return out;
}

TORCH_LIBRARY(zoo, m) {
  m.def("swish(Tensor x, float beta=1.0) -> Tensor");
  m.def("swish_backward(Tensor grad, Tensor x, float beta) -> Tensor");
}

TORCH_LIBRARY_IMPL(zoo, CPU, m) {
  m.impl("swish", &swish_cpu);
  m.impl("swish_backward", &swish_backward_cpu);
}

}  // namespace zoo
