// Stand-in for gloo's gloo/common/error.h: ProcessGroupGloo.hpp includes it but uses nothing
// from it. (gloo's exceptions derive from std::runtime_error, which is how the shim catches
// them.) See ../../README.md.
#pragma once
