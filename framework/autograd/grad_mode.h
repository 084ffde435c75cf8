#pragma once
// Whether ops record the autograd graph on this thread.

namespace longnet::autograd {

/// True unless a NoGradGuard is active on this thread.
bool grad_enabled();
/// Sets recording on or off for this thread.
void set_grad_enabled(bool enabled);

/// True while a DeferGradHooks is active on this thread: leaves accumulate gradients without
/// firing their gradient-ready hooks (a backward run in parts fires them after its last part).
bool grad_hooks_deferred();
/// Sets the deferral on or off for this thread.
void set_grad_hooks_deferred(bool deferred);

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

/// Defers gradient-ready hooks in its scope (see grad_hooks_deferred).
class DeferGradHooks {
 public:
  DeferGradHooks() : prev_(autograd::grad_hooks_deferred()) { autograd::set_grad_hooks_deferred(true); }
  ~DeferGradHooks() { autograd::set_grad_hooks_deferred(prev_); }
  DeferGradHooks(const DeferGradHooks&) = delete;
  DeferGradHooks& operator=(const DeferGradHooks&) = delete;

 private:
  bool prev_;
};

}  // namespace longnet
