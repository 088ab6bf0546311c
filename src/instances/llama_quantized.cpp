// See llama_float.cpp.
#include "knprobe/model/llama.hpp"

template class knprobe::LlamaModel<float, knprobe::QuantizedMatrix>;
