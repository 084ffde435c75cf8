#include "layers/attention/core.h"

#include <algorithm>
#include <map>
#include <mutex>

#include "layers/attention/adaptive.h"
#include "layers/attention/block_sparse.h"
#include "layers/attention/dense.h"
#include "layers/attention/dilated.h"

namespace longnet {
namespace {

struct Registry {
  std::mutex mu;
  std::map<std::string, AttentionCoreFactory> factories;
};

// The built-in cores are listed here rather than self-registered from their files: a static
// library drops object files nothing refers to, and their registrations with them.
Registry& registry() {
  static Registry r{{},
                    {{"dense", [](const AttentionConfig& c) { return std::make_unique<DenseAttention>(c); }},
                     {"dilated", [](const AttentionConfig& c) { return std::make_unique<DilatedAttention>(c); }},
                     {"block_sparse", [](const AttentionConfig& c) { return std::make_unique<BlockSparseAttention>(c); }},
                     {"adaptive", [](const AttentionConfig& c) { return std::make_unique<AdaptiveAttention>(c); }}}};
  return r;
}

}  // namespace

std::unique_ptr<AttentionCore> make_attention_core(const std::string& name, const AttentionConfig& config) {
  AttentionCoreFactory factory;
  {
    Registry& r = registry();
    std::lock_guard<std::mutex> lock(r.mu);
    const auto it = r.factories.find(name);
    if (it != r.factories.end()) factory = it->second;
  }
  if (!factory) {
    std::string known;
    for (const std::string& n : attention_core_names()) known += (known.empty() ? "" : ", ") + n;
    LN_FAIL("[attention] unknown core '", name, "'; known cores: ", known);
  }
  return factory(config);
}

void register_attention_core(const std::string& name, AttentionCoreFactory factory) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  r.factories[name] = std::move(factory);
}

std::vector<std::string> attention_core_names() {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  std::vector<std::string> names;
  for (const auto& [name, f] : r.factories) names.push_back(name);
  return names;
}

void check_core_inputs(const char* core, const Tensor& q, const Tensor& k, const Tensor& v,
                       const AttentionOptions& options, bool cross_ok) {
  LN_CHECK(q.defined() && k.defined() && v.defined(), "[", core, "] undefined q, k or v");
  LN_CHECK(q.dim() == 4 && k.dim() == 4 && v.shape() == k.shape(), "[", core,
           "] expects q (B, N, H, D) and k, v (B, Nk, H, D), got q ", shape_str(q.shape()), ", k ",
           shape_str(k.shape()), ", v ", shape_str(v.shape()));
  LN_CHECK(k.size(0) == q.size(0) && k.size(2) == q.size(2) && k.size(3) == q.size(3), "[", core, "] q ",
           shape_str(q.shape()), " and k ", shape_str(k.shape()), " differ in batch, heads or head dim");
  LN_CHECK(cross_ok || k.size(1) == q.size(1), "[", core, "] is self-attention: q ", shape_str(q.shape()),
           " and k ", shape_str(k.shape()), " need the same length");
  const Tensor& m = options.key_padding_mask;
  const Shape want{k.size(0), k.size(1)};
  LN_CHECK(!m.defined() || m.shape() == want, "[", core, "] key padding mask ", shape_str(m.defined() ? m.shape() : Shape{}),
           " should be (B, Nk) = ", shape_str(want));
}

}  // namespace longnet
