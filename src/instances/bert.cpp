// See llama_float.cpp.
#include "knprobe/model/bert.hpp"

template class knprobe::BertModel<float>;
template class knprobe::BertModel<double>;
