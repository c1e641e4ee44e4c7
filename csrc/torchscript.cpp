// The narrow part of the libtorch C++ API that torchfit needs and tch does not expose:
// building a torch::jit::Module with real parameters and buffers, giving it methods from
// TorchScript source, and saving it with extra files; and libtorch's fused Adam
// kernel, one dispatch for a whole update. Wrapped safely in src/shim.rs; every function
// returns nullptr on success or an error message that the caller frees with tf_string_free.
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/csrc/jit/python/update_graph_executor_opt.h>
#include <torch/script.h>

#include <ATen/autocast_mode.h>

#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "guarded.h"
#include "torchfit.h"

using torchfit::guarded;

extern "C" {

void tf_string_free(char* s) {
  if (s != torchfit::kOutOfMemory) std::free(s);
}

// A new, empty module whose TorchScript class is `class_name` (e.g. "torchfit.Dense0").
// Like every module torch.jit.script makes, it has a bool attribute `training` (true, as a
// new nn.Module): without it Python's `m.training` raises and `m.eval()` / C++'s
// `Module::eval()` fail on the loaded model.
char* tf_module_new(const char* class_name, void** out) {
  return guarded([&] {
    auto module = std::make_unique<torch::jit::Module>(c10::QualifiedName(class_name));
    module->register_attribute("training", c10::BoolType::get(), true);
    *out = module.release();
  });
}

void tf_module_free(void* module) { delete static_cast<torch::jit::Module*>(module); }

// Registers a CPU copy of `tensor` (a tch tensor, i.e. a torch::Tensor*) as a parameter
// (requires_grad set, as nn.Module does) or, with is_buffer != 0, as a buffer.
char* tf_module_register_tensor(void* module, const char* name, const void* tensor,
                                int is_buffer) {
  return guarded([&] {
    auto* m = static_cast<torch::jit::Module*>(module);
    const auto& t = *static_cast<const torch::Tensor*>(tensor);
    auto copy = t.detach().to(torch::kCPU).clone();
    if (is_buffer == 0) copy.set_requires_grad(true);
    m->register_parameter(name, copy, is_buffer != 0);
  });
}

// Makes `child` an attribute `name` of `module`; the child is copied (modules are handles
// onto shared objects, so later changes to either are visible in both).
char* tf_module_register_module(void* module, const char* name, const void* child) {
  return guarded([&] {
    static_cast<torch::jit::Module*>(module)->register_module(
        name, *static_cast<const torch::jit::Module*>(child));
  });
}

// Compiles TorchScript source (one or more `def` methods taking `self`) into the module.
char* tf_module_define(void* module, const char* source) {
  return guarded([&] { static_cast<torch::jit::Module*>(module)->define(source); });
}

// Saves the module to `path`, with extra files stored under extra/<name> in the archive.
char* tf_module_save(void* module, const char* path, const char* const* extra_names,
                     const char* const* extra_values, const size_t* extra_lengths,
                     size_t n_extra) {
  return guarded([&] {
    torch::jit::ExtraFilesMap extra;
    for (size_t i = 0; i < n_extra; ++i) {
      extra[extra_names[i]] = std::string(extra_values[i], extra_lengths[i]);
    }
    static_cast<torch::jit::Module*>(module)->save(path, extra);
  });
}

// Loads a TorchScript file (torch.jit.save's archive) onto the CPU.
char* tf_module_load(const char* path, void** out) {
  return guarded([&] {
    auto module = std::make_unique<torch::jit::Module>(torch::jit::load(path, torch::kCPU));
    *out = module.release();
  });
}

// A deep copy of a module: its own parameters and buffers, the same methods.
char* tf_module_deepcopy(const void* module, void** out) {
  return guarded([&] {
    auto copy = std::make_unique<torch::jit::Module>(static_cast<const torch::jit::Module*>(module)->deepcopy());
    *out = copy.release();
  });
}

// Every parameter (or, with buffers != 0, every buffer) of the module and its submodules,
// in named_parameters() order: `names` gets them '\n'-separated (malloc'd, freed with
// tf_string_free) and `tensors` a malloc'd array of new torch::Tensor* sharing each tensor
// (tch takes ownership of each; the array is freed with tf_ptrs_free).
char* tf_module_named_tensors(const void* module, int buffers, char** names, void*** tensors, size_t* n) {
  return guarded([&] {
    const auto* m = static_cast<const torch::jit::Module*>(module);
    std::vector<std::pair<std::string, torch::Tensor>> found;
    if (buffers != 0) {
      for (const auto& item : m->named_buffers(/*recurse=*/true)) found.emplace_back(item.name, item.value);
    } else {
      for (const auto& item : m->named_parameters(/*recurse=*/true)) found.emplace_back(item.name, item.value);
    }
    std::string joined;
    for (size_t i = 0; i < found.size(); ++i) joined += (i ? "\n" : "") + found[i].first;
    auto* text = static_cast<char*>(std::malloc(joined.size() + 1));
    auto* array = static_cast<void**>(std::malloc(sizeof(void*) * (found.size() + 1)));
    if (text == nullptr || array == nullptr) {
      std::free(text);
      std::free(array);
      throw std::bad_alloc();
    }
    std::memcpy(text, joined.c_str(), joined.size() + 1);
    for (size_t i = 0; i < found.size(); ++i) array[i] = new torch::Tensor(found[i].second);
    *names = text;
    *tensors = array;
    *n = found.size();
  });
}

void tf_ptrs_free(void** ptrs) { std::free(ptrs); }

// Sets the module's (and its submodules') training flag, as nn.Module.train(on) does.
char* tf_module_set_training(void* module, int on) {
  return guarded([&] { static_cast<torch::jit::Module*>(module)->train(on != 0); });
}

// Whether the module has a method `name`.
int tf_module_has_method(const void* module, const char* name) {
  try {
    return static_cast<const torch::jit::Module*>(module)->find_method(name).has_value() ? 1 : 0;
  } catch (...) {
    return 0;
  }
}

// Runs method `method` on tensor arguments; its result must be a tensor, returned as a new
// torch::Tensor* (tch takes ownership).
char* tf_module_run(void* module, const char* method, const void* const* inputs, size_t n_inputs, void** out) {
  return guarded([&] {
    auto* m = static_cast<torch::jit::Module*>(module);
    std::vector<c10::IValue> args;
    for (size_t i = 0; i < n_inputs; ++i) args.emplace_back(*static_cast<const torch::Tensor*>(inputs[i]));
    auto result = m->get_method(method)(std::move(args));
    if (!result.isTensor()) {
      throw std::runtime_error(std::string(method) + " returned a " + result.tagKind() + ", not a Tensor");
    }
    *out = new torch::Tensor(result.toTensor());
  });
}

// Makes `grad` the .grad of `tensor`, so that autograd accumulates into it in place (a view
// of a flat buffer, as DDP's gradient_as_bucket_view does).
char* tf_tensor_set_grad(void* tensor, const void* grad) {
  return guarded([&] {
    static_cast<torch::Tensor*>(tensor)->mutable_grad() = *static_cast<const torch::Tensor*>(grad);
  });
}

namespace {
// Tells Rust that autograd has accumulated a parameter's gradient (see tf_tensor_on_grad).
struct ReadyHook : torch::autograd::PostAccumulateGradHook {
  using Fn = void (*)(void*, size_t);
  ReadyHook(Fn fn, void* ctx, size_t index) : fn(fn), ctx(ctx), index(index) {}
  void operator()(const torch::autograd::Variable&) override { fn(ctx, index); }
  Fn fn;
  void* ctx;
  size_t index;
};
}  // namespace

// Calls callback(ctx, index) (a `void (*)(void*, size_t)`, passed as void* so that the
// declarations stay plain) each time autograd has accumulated a gradient into the tensor's
// .grad, as Tensor.register_post_accumulate_grad_hook does; replaces an earlier such hook.
// Data-parallel training starts summing a gradient bucket as soon as it is final.
char* tf_tensor_on_grad(void* tensor, void* callback, void* ctx, size_t index) {
  return guarded([&] {
    auto fn = reinterpret_cast<ReadyHook::Fn>(callback);
    torch::autograd::impl::set_post_acc_grad_hooks(*static_cast<torch::Tensor*>(tensor),
                                                   std::make_unique<ReadyHook>(fn, ctx, index));
  });
}

// Runs autograd's backward pass from `output` with `grad` as its gradient (output.backward(grad)),
// accumulating into the leaves' .grad.
char* tf_backward(const void* output, const void* grad) {
  return guarded([&] {
    const auto& out = *static_cast<const torch::Tensor*>(output);
    const auto& g = *static_cast<const torch::Tensor*>(grad);
    torch::autograd::backward({out}, {g.to(out.scalar_type())});
  });
}

// Turns autocast to bfloat16 on or off for the CPU (cuda == 0) or CUDA in this thread, as
// `torch.autocast(device, dtype=torch.bfloat16)` does on entry and exit.
char* tf_autocast_bf16(int cuda, int on) {
  return guarded([&] {
    auto device = cuda != 0 ? at::kCUDA : at::kCPU;
    if (on != 0) {
      at::autocast::set_autocast_dtype(device, at::kBFloat16);
      at::autocast::set_autocast_enabled(device, true);
      at::autocast::increment_nesting();
    } else {
      at::autocast::set_autocast_enabled(device, false);
      if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    }
  });
}

// One Adam step over a flat parameter buffer with libtorch's fused kernel (PyTorch's update
// rule, L2 weight decay off): advances `step` (a float scalar tensor) by one, then updates
// param, exp_avg and exp_avg_sq in place. Keras's rule is the same with eps scaled by
// 1 / sqrt(1 - beta2^t), which the caller passes.
char* tf_fused_adam(void* param, const void* grad, void* exp_avg, void* exp_avg_sq, void* step,
                    const void* lr_tensor, double lr, double beta1, double beta2, double eps) {
  return guarded([&] {
    auto& p = *static_cast<torch::Tensor*>(param);
    const auto& g = *static_cast<const torch::Tensor*>(grad);
    auto& m = *static_cast<torch::Tensor*>(exp_avg);
    auto& v = *static_cast<torch::Tensor*>(exp_avg_sq);
    auto& t = *static_cast<torch::Tensor*>(step);
    t.add_(1);
    // A rate held in a device tensor is read by the kernel when it runs, which a captured
    // CUDA graph needs (a double would be frozen into the graph at capture).
    if (lr_tensor != nullptr) {
      at::_fused_adam_({p}, {g}, {m}, {v}, {}, {t}, *static_cast<const torch::Tensor*>(lr_tensor), beta1, beta2,
                       /*weight_decay=*/0.0, eps, /*amsgrad=*/false, /*maximize=*/false);
    } else {
      at::_fused_adam_({p}, {g}, {m}, {v}, {}, {t}, lr, beta1, beta2, /*weight_decay=*/0.0, eps,
                       /*amsgrad=*/false, /*maximize=*/false);
    }
  });
}

// Flushes denormal floats to zero (x86's FTZ and DAZ) in this thread and in the threads it
// starts from now on (they inherit its floating-point mode), as TensorFlow does on the CPU;
// 1 when the CPU has the mode, 0 when not (libtorch then changes nothing).
int tf_set_flush_denormal(int on) { return at::globalContext().setFlushDenormal(on != 0) ? 1 : 0; }

// Turns the TorchScript graph executor's optimisations (profiling, autodiff subgraphs) on or
// off in this thread, as torch._C._set_graph_executor_optimize does: off, a method runs its
// ops one by one and autograd records them as in eager PyTorch.
void tf_set_graph_executor_optimize(int on) { torch::jit::setGraphExecutorOptimize(on != 0); }

}  // extern "C"
