// Declaration-only stand-in for gloo's gloo/transport/device.h: see ../../README.md. Both
// classes are only held by pointer in ProcessGroupGloo.hpp.
#pragma once

namespace gloo {
namespace transport {

class Device;
class UnboundBuffer;

}  // namespace transport
}  // namespace gloo
