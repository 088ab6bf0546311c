#pragma once
// Umbrella header: everything in knprobe that needs no optional dependency.
#include "knprobe/core/error.hpp"
#include "knprobe/core/rng.hpp"
#include "knprobe/core/tensor.hpp"
#include "knprobe/model/blocks.hpp"
#include "knprobe/model/concept.hpp"
#include "knprobe/version.hpp"
