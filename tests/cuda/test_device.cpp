// GPU smoke test (label `gpu`): skipped when the machine has no CUDA device.
#include "knprobe/backend/cuda/device.hpp"

// GCC 12 reports a false maybe-uninitialized inside boost::function for test decorators.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <boost/test/unit_test.hpp>

namespace {
struct HasDevice {
  boost::test_tools::assertion_result operator()(boost::unit_test::test_unit_id) const {
    boost::test_tools::assertion_result r(knprobe::cuda::device_count() > 0);
    r.message() << "no CUDA device";
    return r;
  }
};
}  // namespace

BOOST_AUTO_TEST_SUITE(cuda_device)

BOOST_AUTO_TEST_CASE(count_never_throws) {
  BOOST_TEST(knprobe::cuda::device_count() >= 0);
}

BOOST_AUTO_TEST_CASE(cublas_sgemm_matches_cpu, *boost::unit_test::precondition(HasDevice())) {
  const std::vector<float> a{1, 2, 3, 4, 5, 6};  // 2 × 3
  const std::vector<float> b{1, 0, 0, 1, 1, 1};  // 3 × 2
  const auto c = knprobe::cuda::sgemm_row_major(a, b, 2, 3, 2);
  BOOST_TEST(c == (std::vector<float>{4, 5, 10, 11}), boost::test_tools::per_element());
  BOOST_TEST_MESSAGE("device: " << knprobe::cuda::device_name(0));
}

BOOST_AUTO_TEST_SUITE_END()
