#pragma once
// Whether ops record the autograd graph on this thread.

namespace longnet::autograd {

/// True unless a NoGradGuard is active on this thread.
bool grad_enabled();
/// Sets recording on or off for this thread.
void set_grad_enabled(bool enabled);

}  // namespace longnet::autograd

namespace longnet {

/// Disables graph recording in its scope (inference, optimizer updates).
class NoGradGuard {
 public:
  NoGradGuard() : prev_(autograd::grad_enabled()) { autograd::set_grad_enabled(false); }
  ~NoGradGuard() { autograd::set_grad_enabled(prev_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

/// Enables graph recording in its scope (activation checkpointing recomputes under it).
class EnableGradGuard {
 public:
  EnableGradGuard() : prev_(autograd::grad_enabled()) { autograd::set_grad_enabled(true); }
  ~EnableGradGuard() { autograd::set_grad_enabled(prev_); }
  EnableGradGuard(const EnableGradGuard&) = delete;
  EnableGradGuard& operator=(const EnableGradGuard&) = delete;

 private:
  bool prev_;
};

}  // namespace longnet
