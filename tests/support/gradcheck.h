#pragma once
// Float64 central-difference gradient checks and tensor comparisons for tests.
#include <functional>
#include <vector>

#include <gtest/gtest.h>

#include "framework/ops/ops.h"

namespace longnet::testing {

/// A function of several tensors whose result is differentiated.
using TensorFn = std::function<Tensor(const std::vector<Tensor>&)>;

/// Tolerances of a gradient check.
struct GradcheckOptions {
  double eps = 1e-6;
  double atol = 1e-6;
  double rtol = 1e-5;
};

/// Checks the analytic gradient of sum(fn(inputs) * w), for a fixed random w, against central
/// differences, for every input that requires grad. Inputs must be contiguous f64 leaves; to test
/// non-contiguous or broadcast arguments, fn views them (transpose, slice, expand) before the op.
::testing::AssertionResult gradcheck(const TensorFn& fn, const std::vector<Tensor>& inputs,
                                     GradcheckOptions opt = {});

/// f64 leaf of the given shape with values from randn (seeded) that requires grad.
Tensor leaf(const Shape& shape, uint64_t seed, double scale = 1.0);

/// Runs f and returns the message of the longnet::Error it throws; records a test failure and
/// returns "" when it throws none.
std::string error_message(const std::function<void()>& f);

/// Checks that two tensors have the same shape and all |a - b| <= atol + rtol * |b|.
::testing::AssertionResult all_close(const Tensor& a, const Tensor& b, double atol = 1e-6,
                                     double rtol = 1e-5);

/// ||got - ref|| / ||ref|| over all elements, in f64 (elements where both hold the same infinity
/// count as equal): how far a result computed in rounded arithmetic is from its reference as a
/// whole, where sums that cancel make elementwise tolerances judge the rounding. Records a test
/// failure (and returns infinity) when the element counts differ.
double relative_error(const Tensor& got, const Tensor& ref);

}  // namespace longnet::testing
