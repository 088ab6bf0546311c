#pragma once
// All transformer building blocks (forward + activation backward).
#include "knprobe/model/blocks/activation.hpp"
#include "knprobe/model/blocks/attention.hpp"
#include "knprobe/model/blocks/embedding.hpp"
#include "knprobe/model/blocks/layer_norm.hpp"
#include "knprobe/model/blocks/linear.hpp"
#include "knprobe/model/blocks/rms_norm.hpp"
#include "knprobe/model/blocks/rope.hpp"
#include "knprobe/model/blocks/softmax.hpp"
