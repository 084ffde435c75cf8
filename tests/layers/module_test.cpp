// Module: hierarchical names, registration errors, train/eval, in-place device and dtype moves,
// state_dict round trips and the errors of load_state_dict (every bad key listed).
#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "framework/ops/ops.h"
#include "layers/dropout.h"
#include "layers/linear.h"
#include "layers/module.h"
#include "layers/norm.h"
#include "tests/support/gradcheck.h"

namespace longnet {
namespace {

using testing::all_close;
using testing::error_message;

// A small tree: block.{proj, norm, drop}, list of two Linears, one buffer.
class Block : public Module {
 public:
  explicit Block(Initializer& init) {
    proj = register_module("proj", std::make_shared<Linear>(4, 3, true, init));
    norm = register_module("norm", std::make_shared<LayerNorm>(3, init));
    drop = register_module("drop", std::make_shared<Dropout>(0.5));
  }
  std::string type_name() const override { return "Block"; }
  Tensor forward(const Tensor& x) const { return drop->forward(norm->forward(proj->forward(x))); }
  std::shared_ptr<Linear> proj;
  std::shared_ptr<LayerNorm> norm;
  std::shared_ptr<Dropout> drop;
};

class Net : public Module {
 public:
  explicit Net(Initializer& init) {
    scale = register_parameter("scale", init.constant({3}, 2.0));
    block = register_module("block", std::make_shared<Block>(init));
    heads = register_module("heads", std::make_shared<ModuleList<Linear>>());
    heads->push_back(std::make_shared<Linear>(3, 2, false, init));
    heads->push_back(std::make_shared<Linear>(3, 5, true, init));
    steps = register_buffer("steps", zeros({1}, DType::I64));
  }
  std::string type_name() const override { return "Net"; }
  Tensor forward(const Tensor& x) const { return (*heads)[1].forward(mul(block->forward(x), scale)); }
  // Exposes registration for the error tests.
  void add_parameter(const std::string& name) { register_parameter(name, zeros({1})); }

  Tensor scale, steps;
  std::shared_ptr<Block> block;
  std::shared_ptr<ModuleList<Linear>> heads;
};

std::vector<std::string> names_of(const std::vector<NamedTensor>& named) {
  std::vector<std::string> out;
  for (const auto& [name, t] : named) out.push_back(name);
  return out;
}

TEST(Module, HierarchicalNamesInRegistrationOrder) {
  Initializer init(1);
  Net net(init);
  const std::vector<std::string> want{"scale", "block.proj.weight", "block.proj.bias", "block.norm.weight",
                                      "block.norm.bias", "heads.0.weight", "heads.1.weight", "heads.1.bias"};
  EXPECT_EQ(names_of(net.named_parameters()), want);
  EXPECT_EQ(names_of(net.named_buffers()), std::vector<std::string>{"steps"});
  std::vector<std::string> modules;
  for (const auto& [name, m] : net.named_modules()) modules.push_back(name + ":" + m->type_name());
  EXPECT_EQ(modules, (std::vector<std::string>{":Net", "block:Block", "block.proj:Linear", "block.norm:LayerNorm",
                                               "block.drop:Dropout", "heads:ModuleList", "heads.0:Linear",
                                               "heads.1:Linear"}));
  // The counts follow the shapes: 3 + (4*3 + 3) + 3 + 3 + 3*2 + (3*5 + 5).
  EXPECT_EQ(net.parameter_count(), 3 + 15 + 6 + 6 + 20);
  for (const Tensor& p : net.parameters()) EXPECT_TRUE(p.requires_grad());
  EXPECT_EQ(net.state_dict().size(), want.size() + 1);
}

TEST(Module, RegistrationErrorsNameTheModule) {
  Initializer init(1);
  Net net(init);
  EXPECT_NE(error_message([&] { net.add_parameter("scale"); }).find("'scale' is already registered"), std::string::npos);
  EXPECT_NE(error_message([&] { net.add_parameter("block"); }).find("already registered"), std::string::npos);
  const std::string dotted = error_message([&] { net.add_parameter("a.b"); });
  EXPECT_NE(dotted.find("Net"), std::string::npos) << dotted;
  EXPECT_NE(dotted.find("contain no '.'"), std::string::npos) << dotted;
}

TEST(Module, TrainAndEvalReachEverySubmodule) {
  Initializer init(1);
  Net net(init);
  const Tensor x = randn({64, 4});
  net.eval();
  for (const auto& [name, m] : net.named_modules()) EXPECT_FALSE(m->is_training()) << name;
  // In eval mode dropout is the identity: two calls agree, and equal the undropped path.
  EXPECT_TRUE(all_close(net.forward(x), net.forward(x), 0.0, 0.0));
  const Tensor plain = net.block->norm->forward(net.block->proj->forward(x));
  EXPECT_TRUE(all_close(net.block->forward(x), plain, 0.0, 0.0));
  net.train();
  for (const auto& [name, m] : net.named_modules()) EXPECT_TRUE(m->is_training()) << name;
  const auto dropped = net.block->forward(x).to_vector<float>();
  const auto zeros_seen = std::count(dropped.begin(), dropped.end(), 0.0f);
  EXPECT_GT(zeros_seen, 40);  // about half of 192
  EXPECT_LT(zeros_seen, 150);
}

TEST(Module, ToDtypeConvertsInPlaceKeepingHandles) {
  Initializer init(3);
  Net net(init);
  const Tensor held = net.block->proj->weight();  // as an optimizer would hold it
  const auto before = held.to_vector<double>();
  net.forward(randn({2, 4})).backward(ones({2, 5}));
  ASSERT_TRUE(held.grad().defined());
  net.to(DType::F64);
  EXPECT_EQ(held.dtype(), DType::F64);
  EXPECT_EQ(held.grad().dtype(), DType::F64);
  EXPECT_TRUE(held.requires_grad());
  EXPECT_EQ(held.to_vector<double>(), before);  // f32 -> f64 is exact
  EXPECT_EQ(net.steps.dtype(), DType::I64);     // integer buffers keep their type
  // The converted module still trains: gradients arrive in the new dtype.
  net.zero_grad();
  EXPECT_FALSE(held.grad().defined());
  net.forward(randn({2, 4}, DType::F64)).backward(ones({2, 5}, DType::F64));
  EXPECT_EQ(held.grad().dtype(), DType::F64);
  const std::string bad = error_message([&] { net.to(DType::I32); });
  EXPECT_NE(bad.find("float dtype"), std::string::npos) << bad;
}

TEST(Module, StateDictRoundTripReproducesOutputs) {
  Initializer a_init(1), b_init(2);
  Net a(a_init), b(b_init);
  a.eval();
  b.eval();
  const Tensor x = randn({3, 4});
  ASSERT_FALSE(all_close(a.forward(x), b.forward(x)));
  // Through f64 copies of the values: loading converts dtypes.
  StateDict state;
  for (const auto& [name, t] : a.state_dict()) state.emplace(name, t.detach().to(is_floating(t.dtype()) ? DType::F64 : t.dtype()));
  const Module::LoadResult r = b.load_state_dict(state);
  EXPECT_TRUE(r.missing.empty() && r.unexpected.empty());
  EXPECT_TRUE(all_close(b.forward(x), a.forward(x), 0.0, 0.0));
  EXPECT_EQ(b.block->proj->weight().dtype(), DType::F32);
  EXPECT_TRUE(b.block->proj->weight().is_leaf());
}

TEST(Module, LoadStateDictListsEveryBadKeyAndChangesNothing) {
  Initializer a_init(1), b_init(2);
  Net a(a_init), b(b_init);
  StateDict state = a.state_dict();
  state.erase("heads.0.weight");
  state.erase("block.norm.bias");
  state["extra.one"] = zeros({2});
  state["extra.two"] = zeros({2});
  state["block.proj.weight"] = zeros({3, 3});
  state["heads.1.bias"] = zeros({4});
  const auto before = b.block->norm->weight().to_vector<float>();
  const std::string msg = error_message([&] { b.load_state_dict(state); });
  for (const char* key : {"heads.0.weight", "block.norm.bias", "extra.one", "extra.two", "block.proj.weight (model (3, 4), given (3, 3))",
                          "heads.1.bias (model (5), given (4))", "missing keys (2)", "unexpected keys (2)", "mis-shaped keys (2)"}) {
    EXPECT_NE(msg.find(key), std::string::npos) << key << " not in: " << msg;
  }
  EXPECT_EQ(b.block->norm->weight().to_vector<float>(), before);

  // Not strict: mis-shaped keys are still errors...
  EXPECT_NE(error_message([&] { b.load_state_dict(state, false); }).find("mis-shaped keys (2)"), std::string::npos);
  // ...and without them the rest loads, the others reported.
  state["block.proj.weight"] = a.block->proj->weight();
  state["heads.1.bias"] = a.heads->operator[](1).bias();
  const Module::LoadResult r = b.load_state_dict(state, false);
  EXPECT_EQ(r.missing, (std::vector<std::string>{"block.norm.bias", "heads.0.weight"}));
  EXPECT_EQ(r.unexpected, (std::vector<std::string>{"extra.one", "extra.two"}));
  EXPECT_TRUE(all_close(b.block->proj->weight(), a.block->proj->weight(), 0.0, 0.0));
  EXPECT_FALSE(all_close(b.heads->operator[](0).weight(), a.heads->operator[](0).weight()));
}

TEST(Module, UninitialisedBuildHasTheSameStructure) {
  Initializer random(5), none(5, false);
  Net a(random), b(none);
  a.eval();
  b.eval();
  EXPECT_EQ(names_of(a.named_parameters()), names_of(b.named_parameters()));
  EXPECT_EQ(a.parameter_count(), b.parameter_count());
  b.load_state_dict(a.state_dict());
  EXPECT_TRUE(all_close(b.forward(ones({1, 4})), a.forward(ones({1, 4})), 0.0, 0.0));
}

TEST(Module, InitializerIsSeededAndScaled) {
  Initializer a(7), b(7), c(8);
  const Tensor wa = a.xavier_uniform(300, 200, 2.0), wb = b.xavier_uniform(300, 200, 2.0), wc = c.xavier_uniform(300, 200, 2.0);
  EXPECT_TRUE(all_close(wa, wb, 0.0, 0.0));
  EXPECT_FALSE(all_close(wa, wc));
  const double bound = 2.0 * std::sqrt(6.0 / 500.0);
  const auto v = wa.to_vector<double>();
  double sq = 0.0;
  for (double x : v) {
    EXPECT_LE(std::abs(x), bound);
    sq += x * x;
  }
  // Uniform on [-b, b] has variance b^2 / 3.
  EXPECT_NEAR(sq / static_cast<double>(v.size()), bound * bound / 3.0, 0.03 * bound * bound / 3.0);
  const auto n = a.normal({20000}, 0.5).to_vector<double>();
  double m2 = 0.0;
  for (double x : n) m2 += x * x;
  EXPECT_NEAR(std::sqrt(m2 / static_cast<double>(n.size())), 0.5, 0.01);
}

}  // namespace
}  // namespace longnet
