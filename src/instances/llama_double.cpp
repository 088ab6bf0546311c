// See llama_float.cpp.
#include "knprobe/model/llama.hpp"

template class knprobe::detail::CausalDecoder<knprobe::LlamaModel<double>, double>;
template class knprobe::LlamaModel<double>;
