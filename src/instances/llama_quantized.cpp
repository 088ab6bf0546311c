// See llama_float.cpp.
#include "knprobe/model/llama.hpp"

template class knprobe::detail::CausalDecoder<knprobe::LlamaModel<float, knprobe::QuantizedMatrix>,
                                              float>;
template class knprobe::LlamaModel<float, knprobe::QuantizedMatrix>;
