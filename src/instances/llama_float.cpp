// Explicit instantiations compiled once for knprobe's own programs and tests (knprobe_instances,
// KNPROBE_EXTERN_TEMPLATES=1): each of their translation units then skips compiling the model.
#include "knprobe/model/llama.hpp"

template class knprobe::detail::CausalDecoder<knprobe::LlamaModel<float>, float>;
template class knprobe::LlamaModel<float>;
