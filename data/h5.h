#pragma once
// HDF5 helpers private to data/ (this header includes hdf5.h, which the area links privately).
// Every HDF5 call happens under one process-wide lock: builds of HDF5 without --enable-threadsafe
// must not be entered from two threads. HDF5's automatic printing of its error stack is turned off
// and the stack is turned into the text of our exceptions instead.
#include <hdf5.h>

#include <mutex>
#include <string>

namespace longnet::data::h5 {

/// Holds the process-wide HDF5 lock for its scope and silences the error stack printing of the
/// calling thread (HDF5 keeps that setting per thread in thread-safe builds).
class Lock {
 public:
  Lock();
  Lock(const Lock&) = delete;
  Lock& operator=(const Lock&) = delete;

 private:
  std::unique_lock<std::recursive_mutex> lock_;
};

/// An owned HDF5 identifier (file, dataset, dataspace, property list, attribute, type), released
/// on destruction. Destroy it with the lock held.
class Id {
 public:
  Id() = default;
  explicit Id(hid_t id) : id_(id) {}
  ~Id() { reset(); }
  Id(Id&& o) noexcept : id_(o.id_) { o.id_ = H5I_INVALID_HID; }
  Id& operator=(Id&& o) noexcept;
  Id(const Id&) = delete;
  Id& operator=(const Id&) = delete;
  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  void reset();
  /// Gives up ownership and returns the identifier.
  hid_t release() {
    const hid_t id = id_;
    id_ = H5I_INVALID_HID;
    return id;
  }

 private:
  hid_t id_ = H5I_INVALID_HID;
};

/// The messages on the calling thread's HDF5 error stack, API call first, joined by "; "; the
/// stack is cleared.
std::string take_error_stack();

/// Returns `id` owned, or throws "[where] what (HDF5: stack)" when it is negative.
Id check_id(hid_t id, const std::string& where, const std::string& what);
/// Throws "[where] what (HDF5: stack)" when status is negative.
void check(herr_t status, const std::string& where, const std::string& what);

}  // namespace longnet::data::h5
