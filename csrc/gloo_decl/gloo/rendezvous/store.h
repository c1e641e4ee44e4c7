// Declaration-only stand-in for gloo's gloo/rendezvous/store.h: see ../../README.md. Real gloo
// also derives this from gloo::IStore and adds optional virtual methods (and the macro
// GLOO_STORE_HAS_STORE_V2); leaving them out is safe only because the shim never instantiates
// ProcessGroupGloo::GlooStore, the class in ProcessGroupGloo.hpp that derives from this one.
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace gloo {
namespace rendezvous {

class Store {
 public:
  virtual ~Store() = default;
  virtual void set(const std::string& key, const std::vector<char>& data) = 0;
  virtual std::vector<char> get(const std::string& key) = 0;
  virtual void wait(const std::vector<std::string>& keys) = 0;
  virtual void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) = 0;
};

}  // namespace rendezvous
}  // namespace gloo
