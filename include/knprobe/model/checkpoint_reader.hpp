#pragma once
// Reads the float tensors of a Hugging Face safetensors checkpoint by name, each checked against
// the shape its config implies, so that a checkpoint that does not match its config.json is
// rejected at load with a message naming the tensor (not later with a wrong number).

#include <set>
#include <string>
#include <vector>

#include "knprobe/core/error.hpp"
#include "knprobe/core/tensor.hpp"
#include "knprobe/io/safetensors.hpp"

namespace knprobe::detail {

class CheckpointReader {
 public:
  explicit CheckpointReader(const io::SafetensorsCheckpoint& ck) : ck_(ck) {}

  bool contains(const std::string& name) const { return ck_.contains(name); }

  /// Tensor `name` stored [rows × cols] (nn.Linear / nn.Embedding layout).
  MatrixF matrix(const std::string& name, Index rows, Index cols) const {
    check_shape(name, {rows, cols});
    read_.insert(name);
    const auto v = ck_.to_float(name);
    return ConstMatrixMap<float>(v.data(), rows, cols);
  }

  /// Tensor `name` stored [cols × rows] (GPT-2 Conv1D, `[in, out]`), returned transposed as
  /// [rows × cols] = [out × in] so that every linear map is y = x Wᵀ.
  MatrixF matrix_transposed(const std::string& name, Index rows, Index cols) const {
    check_shape(name, {cols, rows});
    read_.insert(name);
    const auto v = ck_.to_float(name);
    return ConstMatrixMap<float>(v.data(), cols, rows).transpose();
  }

  /// 1-D tensor `name` of n entries.
  VectorF vector(const std::string& name, Index n) const {
    check_shape(name, {n});
    read_.insert(name);
    const auto v = ck_.to_float(name);
    return Eigen::Map<const VectorF>(v.data(), n);
  }

  /// Refuses (FormatError naming the tensor) any tensor of the checkpoint that was not read and
  /// that `ignorable(name)` does not accept: a bias, norm or scale the model does not implement
  /// must not be dropped silently.
  template <class Ignorable>
  void refuse_unread(const std::string& family, Ignorable&& ignorable) const {
    for (const auto& n : ck_.names())
      KNPROBE_REQUIRE(read_.count(n) || ignorable(n), FormatError, ck_.directory().string(),
                      ": tensor '", n, "' is not used by the ", family,
                      " backend (a bias, norm or scaling it does not implement?): refusing rather "
                      "than ignoring it");
  }

 private:
  void check_shape(const std::string& name, std::vector<Index> want) const {
    const auto& got = ck_.info(name).shape;  // throws FormatError naming a missing tensor
    bool same = got.size() == want.size();
    for (std::size_t i = 0; same && i < got.size(); ++i) same = got[i] == want[i];
    if (same) return;
    auto str = [](const auto& s) {
      std::string o = "[";
      for (std::size_t i = 0; i < s.size(); ++i) o += (i ? ", " : "") + std::to_string(s[i]);
      return o + "]";
    };
    throw ShapeError(ck_.directory().string() + ": tensor '" + name + "' has shape " + str(got) +
                     ", the config implies " + str(want));
  }

  const io::SafetensorsCheckpoint& ck_;
  mutable std::set<std::string> read_;  ///< names of the tensors read so far
};

}  // namespace knprobe::detail
