// The two gradients of a stride-1, SAME, odd-kernel NHWC/HWIO float32 convolution, computed by
// oneDNN, as XLA FFI handlers for the CPU backend. jaxdigits/onednn.py builds this file on first
// use, registers the handlers and calls them from a custom_vjp.
//
// conv_backward_weights(x [n, h, w, cin], dy [n, h, w, cout]) -> dw [k, k, cin, cout]
// conv_backward_data(dy [n, h, w, cout], w [k, k, cin, cout]) -> dx [n, h, w, cin]
//
// oneDNN picks its own weight layout (format_tag::any, blocked on AVX-512); the HWIO weights are
// reordered to and from it on each call (k*k*cin*cout floats, small next to the activations).
// Primitives are created once per shape and cached.

#include <array>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using Dims = std::array<int64_t, 6>;  // n, h, w, cin, cout, k

namespace {

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

struct Descs {
  memory::desc x, dy, w_hwio, w_any;  // w_any: oneDNN chooses the kernel's layout.
  memory::dims strides, padding;
  dnnl::convolution_forward::primitive_desc forward;  // The hint both gradients need.
};

Descs MakeDescs(const Dims& d) {
  auto [n, h, w, cin, cout, k] = d;
  using tag = memory::format_tag;
  auto f32 = memory::data_type::f32;
  Descs s{memory::desc({n, cin, h, w}, f32, tag::nhwc),
          memory::desc({n, cout, h, w}, f32, tag::nhwc),
          memory::desc({cout, cin, k, k}, f32, tag::hwio),
          memory::desc({cout, cin, k, k}, f32, tag::any), {1, 1}, {k / 2, k / 2}, {}};
  s.forward = dnnl::convolution_forward::primitive_desc(
      Engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, s.x,
      s.w_any, s.dy, s.strides, s.padding, s.padding);
  return s;
}

struct Weights {  // Backward weights: the primitive and the reorder of its result to HWIO.
  dnnl::convolution_backward_weights::primitive_desc pd;
  dnnl::convolution_backward_weights prim;
  dnnl::reorder to_hwio;
  memory::desc w_hwio;
};

struct Data {  // Backward data: the primitive and the reorder of HWIO weights to its layout.
  dnnl::convolution_backward_data::primitive_desc pd;
  dnnl::convolution_backward_data prim;
  dnnl::reorder from_hwio;
  memory::desc w_hwio;
};

// One oneDNN call at a time: each uses every core through OpenMP anyway, and calls that XLA
// runs concurrently (independent ops, or several programs) were seen to give other bits.
std::mutex& CallMutex() {
  static std::mutex mu;
  return mu;
}

template <typename T>
T& Cached(const Dims& d, T (*make)(const Dims&)) {
  static std::mutex mu;
  static std::map<Dims, std::unique_ptr<T>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = cache[d];
  if (!slot) slot = std::make_unique<T>(make(d));
  return *slot;
}

Weights MakeWeights(const Dims& d) {
  Descs s = MakeDescs(d);
  dnnl::convolution_backward_weights::primitive_desc pd(
      Engine(), dnnl::algorithm::convolution_direct, s.x, s.w_any, s.dy, s.strides, s.padding,
      s.padding, s.forward);
  dnnl::reorder::primitive_desc r(Engine(), pd.diff_weights_desc(), Engine(), s.w_hwio);
  return {pd, dnnl::convolution_backward_weights(pd), dnnl::reorder(r), s.w_hwio};
}

Data MakeData(const Dims& d) {
  Descs s = MakeDescs(d);
  dnnl::convolution_backward_data::primitive_desc pd(
      Engine(), dnnl::algorithm::convolution_direct, s.x, s.w_any, s.dy, s.strides, s.padding,
      s.padding, s.forward);
  dnnl::reorder::primitive_desc r(Engine(), s.w_hwio, Engine(), pd.weights_desc());
  return {pd, dnnl::convolution_backward_data(pd), dnnl::reorder(r), s.w_hwio};
}

// Checks the shapes (x and dy NHWC, w an odd square HWIO kernel), then runs body(dims, stream)
// under the call lock, turning oneDNN's exceptions into XLA errors.
template <typename Span, typename Body>
ffi::Error Run(const char* name, Span xd, Span yd, Span wd, Body body) {
  if (xd.size() != 4 || yd.size() != 4 || wd.size() != 4 || wd[0] != wd[1] || wd[0] % 2 == 0)
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      std::string(name) + ": expects NHWC activations and odd square HWIO weights");
  try {
    std::lock_guard<std::mutex> lock(CallMutex());
    dnnl::stream stream(Engine());
    body(Dims{xd[0], xd[1], xd[2], xd[3], yd[3], wd[0]}, stream);
    stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("oneDNN: ") + e.what());
  }
  return ffi::Error::Success();
}

ffi::Error BackwardWeights(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                           ffi::ResultBuffer<ffi::F32> dw) {
  return Run("conv_backward_weights", x.dimensions(), dy.dimensions(), dw->dimensions(),
             [&](const Dims& d, dnnl::stream& stream) {
    Weights& p = Cached<Weights>(d, MakeWeights);
    memory xm(p.pd.src_desc(), Engine(), x.typed_data());
    memory ym(p.pd.diff_dst_desc(), Engine(), dy.typed_data());
    memory blocked(p.pd.diff_weights_desc(), Engine());
    memory out(p.w_hwio, Engine(), dw->typed_data());
    p.prim.execute(stream, {{DNNL_ARG_SRC, xm}, {DNNL_ARG_DIFF_DST, ym},
                            {DNNL_ARG_DIFF_WEIGHTS, blocked}});
    p.to_hwio.execute(stream, blocked, out);
  });
}

ffi::Error BackwardData(ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> w,
                        ffi::ResultBuffer<ffi::F32> dx) {
  return Run("conv_backward_data", dx->dimensions(), dy.dimensions(), w.dimensions(),
             [&](const Dims& d, dnnl::stream& stream) {
    Data& p = Cached<Data>(d, MakeData);
    memory wm(p.w_hwio, Engine(), w.typed_data());
    memory blocked(p.pd.weights_desc(), Engine());
    memory ym(p.pd.diff_dst_desc(), Engine(), dy.typed_data());
    memory xm(p.pd.diff_src_desc(), Engine(), dx->typed_data());
    p.from_hwio.execute(stream, wm, blocked);
    p.prim.execute(stream, {{DNNL_ARG_DIFF_DST, ym}, {DNNL_ARG_WEIGHTS, blocked},
                            {DNNL_ARG_DIFF_SRC, xm}});
  });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxdigits_conv_backward_weights, BackwardWeights,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxdigits_conv_backward_data, BackwardData,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
