// Reuse of a model call's large CPU buffers by the next call. Internal to the runtime.
#pragma once

namespace nequip::detail {

// While one of these lives on a thread, CPU allocations of that thread of at least
// kLargeBlockBytes may reuse the blocks the last call freed (call_memory.cpp).
class ReuseLargeBlocksInThisCall {
 public:
  ReuseLargeBlocksInThisCall();
  ~ReuseLargeBlocksInThisCall();
  ReuseLargeBlocksInThisCall(const ReuseLargeBlocksInThisCall&) = delete;
  ReuseLargeBlocksInThisCall& operator=(const ReuseLargeBlocksInThisCall&) = delete;
};

// Gives the kept blocks back to the system (when a model is unloaded).
void release_kept_blocks();

}  // namespace nequip::detail
