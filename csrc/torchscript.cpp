// The narrow part of the libtorch C++ API that torchfit needs and tch does not expose:
// building a torch::jit::Module with real parameters and buffers, giving it methods from
// TorchScript source, and saving it with extra files; and libtorch's fused Adam
// kernel, one dispatch for a whole update. Wrapped safely in src/shim.rs; every function
// returns nullptr on success or an error message that the caller frees with tf_string_free.
#include <torch/script.h>

#include <memory>
#include <string>

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

}  // extern "C"
