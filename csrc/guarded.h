// The shim's error convention, shared by every file in csrc/: a function returns nullptr on
// success or a malloc'd message that Rust frees with tf_string_free (src/shim.rs `check`).
#pragma once

#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

namespace torchfit {

// Returned in place of an error message that could not be allocated: a null return means
// success, so a failed malloc must still return something. tf_string_free leaves it alone.
// `inline` makes it one object across the shim's files, which tf_string_free compares with.
inline char kOutOfMemory[] = "out of memory (while reporting a libtorch error)";

inline char* copy_string(const std::string& s) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  if (out == nullptr) return kOutOfMemory;
  std::memcpy(out, s.c_str(), s.size() + 1);
  return out;
}

// Runs f and turns any C++ exception into a message: none may cross into Rust. c10d's errors
// (DistStoreError, DistNetworkError, ...) are c10::Errors; gloo's derive from
// std::runtime_error.
template <typename F>
char* guarded(F f) {
  try {
    f();
    return nullptr;
  } catch (const c10::Error& e) {
    return copy_string(e.what_without_backtrace());
  } catch (const std::exception& e) {
    return copy_string(e.what());
  } catch (...) {
    return copy_string("unknown C++ exception");
  }
}

}  // namespace torchfit
