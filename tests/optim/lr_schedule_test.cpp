// Learning-rate schedules: values at chosen steps computed by hand from the definitions, warm-up
// for every schedule, the ends of the decay, and validation messages.
#include "optim/lr_schedule.h"

#include <cmath>
#include <numbers>
#include <string>

#include <gtest/gtest.h>

#include "framework/core/error.h"

namespace longnet::optim {
namespace {

LrSchedule make(const std::string& name, int64_t warmup, int64_t total, double min_lr = 0.0, double power = 1.0) {
  LrSchedule s;
  s.name = name;
  s.lr = 1e-3;
  s.warmup_steps = warmup;
  s.total_steps = total;
  s.min_lr = min_lr;
  s.power = power;
  s.validate();
  return s;
}

TEST(LrSchedule, WarmupIsLinearForEverySchedule) {
  for (const std::string& name : lr_schedule_names()) {
    const LrSchedule s = make(name, 4, 20, 1e-5);
    EXPECT_DOUBLE_EQ(s.at(0), 0.25e-3) << name;
    EXPECT_DOUBLE_EQ(s.at(1), 0.5e-3) << name;
    EXPECT_DOUBLE_EQ(s.at(3), 1e-3) << name;  // the 4th update reaches the peak
  }
}

TEST(LrSchedule, Constant) {
  const LrSchedule s = make("constant", 0, 0);
  for (int64_t step : {0, 1, 1000, 1000000}) EXPECT_DOUBLE_EQ(s.at(step), 1e-3);
}

TEST(LrSchedule, Cosine) {
  // warm-up 10, horizon 110: after warm-up, update n has progress (n - 10) / 100.
  const LrSchedule s = make("cosine", 10, 110, 1e-4);
  EXPECT_DOUBLE_EQ(s.at(59), 1e-4 + 0.9e-3 * 0.5 * (1 + std::cos(std::numbers::pi * 0.5)));  // n = 60
  EXPECT_NEAR(s.at(59), 0.55e-3, 1e-15);
  EXPECT_DOUBLE_EQ(s.at(34), 1e-4 + 0.9e-3 * 0.5 * (1 + std::cos(std::numbers::pi * 0.25)));
  EXPECT_DOUBLE_EQ(s.at(109), 1e-4);   // the last update of the horizon
  EXPECT_DOUBLE_EQ(s.at(5000), 1e-4);  // and after it
  // Monotone after warm-up.
  for (int64_t step = 10; step < 110; ++step) EXPECT_LE(s.at(step), s.at(step - 1)) << step;
}

TEST(LrSchedule, LinearAndPolynomial) {
  const LrSchedule lin = make("linear", 0, 100, 0.0);
  EXPECT_DOUBLE_EQ(lin.at(0), 1e-3 * 0.99);  // n = 1
  EXPECT_DOUBLE_EQ(lin.at(49), 0.5e-3);
  EXPECT_DOUBLE_EQ(lin.at(99), 0.0);
  // Power 1 is linear decay; power 2 squares the remaining fraction.
  const LrSchedule p1 = make("polynomial", 0, 100, 0.0, 1.0);
  const LrSchedule p2 = make("polynomial", 20, 120, 1e-5, 2.0);
  for (int64_t step : {0, 10, 49, 77, 99}) EXPECT_NEAR(p1.at(step), lin.at(step), 1e-18) << step;
  // n = 70: progress (70 - 20) / 100 = 0.5.
  EXPECT_DOUBLE_EQ(p2.at(69), 1e-5 + (1e-3 - 1e-5) * 0.25);
  EXPECT_DOUBLE_EQ(p2.at(119), 1e-5);
  EXPECT_DOUBLE_EQ(p2.at(500), 1e-5);
}

TEST(LrSchedule, InverseSquareRoot) {
  const LrSchedule s = make("inverse_sqrt", 100, 0);
  EXPECT_DOUBLE_EQ(s.at(99), 1e-3);
  EXPECT_DOUBLE_EQ(s.at(399), 1e-3 * std::sqrt(100.0 / 400.0));  // n = 400: half the peak
  EXPECT_DOUBLE_EQ(s.at(399), 0.5e-3);
  // Without warm-up it decays from the first update; min_lr is a floor.
  const LrSchedule nw = make("inverse_sqrt", 0, 0, 2e-4);
  EXPECT_DOUBLE_EQ(nw.at(0), 1e-3);
  EXPECT_DOUBLE_EQ(nw.at(3), 0.5e-3);
  EXPECT_DOUBLE_EQ(nw.at(1000000), 2e-4);
}

TEST(LrSchedule, ValidationMessages) {
  auto error = [](LrSchedule s) -> std::string {
    try {
      s.validate();
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  LrSchedule s;
  EXPECT_EQ(error(s), "");
  s.name = "step";
  EXPECT_NE(error(s).find("unknown schedule 'step' (known: constant, cosine"), std::string::npos);
  s = LrSchedule{};
  s.name = "cosine";
  s.warmup_steps = 10;
  s.total_steps = 10;
  EXPECT_NE(error(s).find("'cosine' decays until total_steps, which must exceed warmup_steps (10), got 10"),
            std::string::npos);
  s = LrSchedule{};
  s.min_lr = 1.0;
  EXPECT_NE(error(s).find("min_lr must lie in [0, lr = 0.001], got 1"), std::string::npos);
  s = LrSchedule{};
  s.warmup_steps = -1;
  EXPECT_NE(error(s).find("warmup_steps must be >= 0"), std::string::npos);
  s = LrSchedule{};
  s.name = "polynomial";
  s.total_steps = 5;
  s.power = 0.0;
  EXPECT_NE(error(s).find("power must be > 0"), std::string::npos);
  EXPECT_THROW(LrSchedule{}.at(-1), Error);
}

}  // namespace
}  // namespace longnet::optim
