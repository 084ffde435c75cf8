#include "data/h5.h"

#include "framework/core/error.h"

namespace longnet::data::h5 {
namespace {

std::recursive_mutex& global_mutex() {
  static std::recursive_mutex mu;
  return mu;
}

herr_t collect(unsigned n, const H5E_error2_t* err, void* data) {
  auto* out = static_cast<std::string*>(data);
  if (err->desc && *err->desc) {
    if (!out->empty()) *out += "; ";
    *out += err->desc;
  }
  (void)n;
  return 0;
}

}  // namespace

Lock::Lock() : lock_(global_mutex()) {
  thread_local bool silenced = false;
  if (!silenced) {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    silenced = true;
  }
}

Id& Id::operator=(Id&& o) noexcept {
  if (this != &o) {
    reset();
    id_ = o.id_;
    o.id_ = H5I_INVALID_HID;
  }
  return *this;
}

void Id::reset() {
  if (id_ >= 0) H5Idec_ref(id_);
  id_ = H5I_INVALID_HID;
}

std::string take_error_stack() {
  std::string out;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, collect, &out);
  H5Eclear2(H5E_DEFAULT);
  return out.empty() ? "no detail" : out;
}

Id check_id(hid_t id, const std::string& where, const std::string& what) {
  if (id < 0) LN_FAIL("[", where, "] ", what, " (HDF5: ", take_error_stack(), ")");
  return Id(id);
}

void check(herr_t status, const std::string& where, const std::string& what) {
  if (status < 0) LN_FAIL("[", where, "] ", what, " (HDF5: ", take_error_stack(), ")");
}

}  // namespace longnet::data::h5
