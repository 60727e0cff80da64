// AOTInductor's code allocates all of a call's intermediate buffers as one pool (Inductor's
// memory planning) and frees it before the call returns: hundreds of MiB for the benchmark
// model (docs/benchmarks.md, "A call's memory, kept and read back", has the sizes). glibc maps
// a block that large fresh from the kernel each time and unmaps it when it is freed, so every
// call faulted in and zeroed the same memory again, time spent in the kernel. Here the torch
// CPU allocator is wrapped: a large block freed during a model call is kept, one at most, for
// the next large request of a call that it can hold without wasting more than a quarter of it.
// Smaller blocks, and every allocation outside a model call, go to torch's allocator unchanged.
//
// Memory: the kept block is given back before a larger block is allocated, and at the end of a
// call that did not use it (after the system grew smaller), so the process keeps between calls
// only what the last call used, as torch's CUDA allocator keeps its cache on a GPU.
//
// A fresh large block is also advised into transparent huge pages (Linux, where THP is
// "madvise" or "always"): the kernels sweep the pool, and with 4 KiB pages they take a TLB miss
// every few rows of a per-edge buffer; the calls are faster with the same peak memory
// (docs/benchmarks.md, "A call's memory in huge pages"). torch's own switch,
// THP_MEM_ALLOC_ENABLE, is read once at its first allocation, before the runtime could set it.

#include "call_memory.h"

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <unordered_map>
#include <utility>

namespace nequip::detail {
namespace {

// Below this, glibc's own reuse of freed memory is good enough.
constexpr std::size_t kLargeBlockBytes = std::size_t{1} << 20;

thread_local int calls_on_this_thread = 0;

#if defined(__linux__) && defined(MADV_HUGEPAGE)
constexpr std::uintptr_t kHugePageBytes = std::uintptr_t{1} << 21;

// Asks for huge pages over the 2 MiB-aligned part of a block not yet touched. Advice only:
// where the kernel has no THP, or refuses, the block is used as it is.
void advise_huge_pages(void* block, std::size_t nbytes) {
  const auto start = reinterpret_cast<std::uintptr_t>(block);
  const std::uintptr_t first = (start + kHugePageBytes - 1) & ~(kHugePageBytes - 1);
  const std::uintptr_t last = (start + nbytes) & ~(kHugePageBytes - 1);
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
}
#else
void advise_huge_pages(void*, std::size_t) {}
#endif

class KeptBlockAllocator final : public c10::Allocator {
 public:
  explicit KeptBlockAllocator(c10::Allocator* next)
      : next_(next), next_delete_(next->raw_deleter()) {}

  c10::DataPtr allocate(std::size_t nbytes) override {
    if (nbytes < kLargeBlockBytes || calls_on_this_thread == 0 || next_delete_ == nullptr) {
      return next_->allocate(nbytes);
    }
    bool kept_too_small = false;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (kept_ != nullptr && nbytes <= kept_bytes_ && nbytes >= kept_bytes_ / 4 * 3) {
        void* block = std::exchange(kept_, nullptr);
        lent_[block] = std::exchange(kept_bytes_, 0);
        kept_in_use_ = true;
        return {block, block, &give_back, c10::Device(c10::DeviceType::CPU)};
      }
      kept_too_small = kept_ != nullptr && nbytes > kept_bytes_;
    }
    // a kept block too small goes first; one too large stays for a larger request to come
    if (kept_too_small) release_kept();
    c10::DataPtr fresh = next_->allocate(nbytes);
    if (fresh.get() == nullptr || fresh.get() != fresh.get_context() ||
        fresh.get_deleter() != next_delete_) {
      return fresh;  // not a plain block of the allocator below: not ours to keep
    }
    void* block = fresh.release_context();
    advise_huge_pages(block, nbytes);
    std::lock_guard<std::mutex> lock(mutex_);
    lent_[block] = nbytes;
    return {block, block, &give_back, c10::Device(c10::DeviceType::CPU)};
  }

  // A raw block (raw_allocate) is freed through here too: ours if lent, else the next's.
  c10::DeleterFnPtr raw_deleter() const override { return next_delete_ ? &give_back : nullptr; }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  void begin_call() {
    std::lock_guard<std::mutex> lock(mutex_);
    kept_in_use_ = false;
  }

  // A block kept from before this call and of no use to it is given back.
  void end_call() {
    void* block = nullptr;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!kept_in_use_) {
        block = std::exchange(kept_, nullptr);
        kept_bytes_ = 0;
      }
    }
    if (block != nullptr) next_delete_(block);
  }

  void release_kept() {
    void* block = nullptr;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      block = std::exchange(kept_, nullptr);
      kept_bytes_ = 0;
    }
    if (block != nullptr) next_delete_(block);
  }

  static KeptBlockAllocator* installed;

 private:
  static void give_back(void* block) { installed->take_back(block); }

  void take_back(void* block) {
    void* to_free = block;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto lent = lent_.find(block);
      if (lent != lent_.end()) {
        const std::size_t bytes = lent->second;
        lent_.erase(lent);
        if (bytes >= kept_bytes_) {  // keep the larger of the two
          to_free = std::exchange(kept_, block);
          kept_bytes_ = bytes;
          kept_in_use_ = true;
        }
      }
    }
    if (to_free != nullptr) next_delete_(to_free);
  }

  c10::Allocator* next_;
  c10::DeleterFnPtr next_delete_;
  std::mutex mutex_;
  std::unordered_map<void*, std::size_t> lent_;  // large blocks out now, and their sizes
  void* kept_ = nullptr;
  std::size_t kept_bytes_ = 0;
  bool kept_in_use_ = false;  // lent or freed by the current call
};

KeptBlockAllocator* KeptBlockAllocator::installed = nullptr;

void install_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    // never destroyed: blocks it lent may be freed at any time, up to the process's exit
    KeptBlockAllocator::installed = new KeptBlockAllocator(c10::GetCPUAllocator());
    c10::SetCPUAllocator(KeptBlockAllocator::installed, /*priority=*/1);
  });
}

}  // namespace

ReuseLargeBlocksInThisCall::ReuseLargeBlocksInThisCall() {
  install_once();
  if (calls_on_this_thread++ == 0) KeptBlockAllocator::installed->begin_call();
}

ReuseLargeBlocksInThisCall::~ReuseLargeBlocksInThisCall() {
  if (--calls_on_this_thread == 0) KeptBlockAllocator::installed->end_call();
}

void release_kept_block() {
  if (KeptBlockAllocator::installed != nullptr) KeptBlockAllocator::installed->release_kept();
}

}  // namespace nequip::detail
