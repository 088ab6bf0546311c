// See llama_float.cpp.
#include "knprobe/model/gpt2.hpp"

template class knprobe::detail::CausalDecoder<
    knprobe::Gpt2Model<float, knprobe::NeuronSite::post_activation>, float>;
template class knprobe::detail::CausalDecoder<
    knprobe::Gpt2Model<double, knprobe::NeuronSite::post_activation>, double>;
template class knprobe::detail::CausalDecoder<
    knprobe::Gpt2Model<float, knprobe::NeuronSite::pre_activation>, float>;
template class knprobe::detail::CausalDecoder<
    knprobe::Gpt2Model<double, knprobe::NeuronSite::pre_activation>, double>;
template class knprobe::Gpt2Model<float, knprobe::NeuronSite::post_activation>;
template class knprobe::Gpt2Model<double, knprobe::NeuronSite::post_activation>;
template class knprobe::Gpt2Model<float, knprobe::NeuronSite::pre_activation>;
template class knprobe::Gpt2Model<double, knprobe::NeuronSite::pre_activation>;
