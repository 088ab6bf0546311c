#pragma once
// Precompiled header of the test executable: the heavy third-party headers.
#include <Eigen/Core>
#include <boost/test/unit_test.hpp>
#include <nlohmann/json.hpp>
#include <xtensor/xarray.hpp>
#include <xtensor/xtensor.hpp>
