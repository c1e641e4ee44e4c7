// Declaration-only stand-in for gloo's gloo/context.h: see ../README.md.
#pragma once

#include <chrono>

namespace gloo {

class Context {
 public:
  // Defined in libtorch_cpu.so; ProcessGroupGloo.hpp's inline setTimeout names it.
  void setTimeout(std::chrono::milliseconds timeout);
};

}  // namespace gloo
