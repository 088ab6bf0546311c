// See llama_float.cpp.
#include "knprobe/model/gpt2.hpp"

template class knprobe::Gpt2Model<float, knprobe::NeuronSite::post_activation>;
template class knprobe::Gpt2Model<double, knprobe::NeuronSite::post_activation>;
template class knprobe::Gpt2Model<float, knprobe::NeuronSite::pre_activation>;
template class knprobe::Gpt2Model<double, knprobe::NeuronSite::pre_activation>;
