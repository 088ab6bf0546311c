#pragma once
// Precompiled header of the test executable: the heavy third-party headers. Not Eigen: GCC < 13
// does not keep `#pragma GCC diagnostic` state in a precompiled header, and Eigen has to be
// included under the pragmas of knprobe/core/eigen.hpp (see the note there).
#include <boost/test/unit_test.hpp>
#include <nlohmann/json.hpp>
#include <xtensor/xarray.hpp>
#include <xtensor/xtensor.hpp>
