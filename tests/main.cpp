#define BOOST_TEST_MODULE knprobe
#include <boost/test/unit_test.hpp>
