// How errors raised inside torch become the runtime's, and how a front end's own exceptions
// pass through unchanged. Internal to the runtime.
#pragma once

#include <c10/util/Exception.h>

#include <exception>
#include <string>

#include "nequip/runtime.h"

namespace nequip::detail {

// An exception thrown by a front end's callback (a FeatureExchange: LAMMPS' error->one, a
// Python exception), carried unchanged through the runtime's code up to the public call that
// made the callback, which rethrows `original`: the front end gets back its own exception,
// not a TorchError wrapping it (reported twice, and an abort turned into an error).
struct CallbackFailed {
  std::exception_ptr original;
};

// Calls `callback`, carrying whatever it throws as a CallbackFailed.
template <typename Callback>
void call_front_end(Callback&& callback) {
  try {
    callback();
  } catch (...) {
    throw CallbackFailed{std::current_exception()};
  }
}

// Runs `body`, turning what torch throws into a TorchError that says what was being done.
// The runtime's own errors and a front end's (CallbackFailed) pass through.
template <typename Body>
auto translate_torch_errors(const std::string& context, Body&& body) -> decltype(body()) {
  try {
    return body();
  } catch (const CallbackFailed&) {
    throw;
  } catch (const Error&) {
    throw;
  } catch (const c10::Error& error) {
    throw TorchError(context + ": " + error.what_without_backtrace());
  } catch (const std::exception& error) {
    throw TorchError(context + ": " + error.what());
  }
}

// Runs `body`, a public call that may make callbacks: a callback's exception leaves as it was
// thrown.
template <typename Body>
auto rethrow_callback_errors(Body&& body) -> decltype(body()) {
  try {
    return body();
  } catch (const CallbackFailed& failed) {
    std::rethrow_exception(failed.original);
  }
}

}  // namespace nequip::detail
