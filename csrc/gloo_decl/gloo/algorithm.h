// Stand-in for gloo's gloo/algorithm.h: ProcessGroupGloo.hpp includes it but uses nothing
// from it. See ../README.md.
#pragma once
