// AOTInductor's code allocates all of a call's intermediate buffers as one pool (Inductor's
// memory planning) and frees it before the call returns: hundreds of MiB for the benchmark
// model (docs/benchmarks.md, "A call's memory, kept and read back", has the sizes). glibc maps
// a block that large fresh from the kernel each time and unmaps it when it is freed, so every
// call faulted in and zeroed the same memory again, time spent in the kernel. Here the torch
// CPU allocator is wrapped: the large blocks freed during a model call are kept for the next
// large requests of a call that each can hold without wasting more than a quarter of it. A
// whole model has one pool; the layer-by-layer parts of a domain file (several LAMMPS ranks)
// have one per part, and the forward parts' saved tensors, so a call reuses several blocks.
// Smaller blocks, and every allocation outside a model call, go to torch's allocator unchanged.
//
// Memory: at the end of a call every kept block that call did not use is given back, so the
// process keeps between calls only what the last call used and freed, as torch's CUDA
// allocator keeps its cache on a GPU. A call whose system is much larger or smaller than the
// last one's may hold both calls' blocks until it ends. (Giving back the kept blocks smaller
// than a fresh request at once, as for one block, undid the parts' reuse: a part's request
// larger than every kept block gave back the blocks of the parts to come.)
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
#include <map>
#include <mutex>
#include <unordered_map>
#include <unordered_set>
#include <vector>

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
    {
      std::lock_guard<std::mutex> lock(mutex_);
      // the smallest kept block that holds the request, if it wastes at most a quarter
      auto fit = kept_.lower_bound(nbytes);
      if (fit != kept_.end() && nbytes >= fit->first / 4 * 3) {
        void* block = fit->second;
        lent_[block] = fit->first;
        kept_.erase(fit);
        kept_before_call_.erase(block);  // used by this call
        return {block, block, &give_back, c10::Device(c10::DeviceType::CPU)};
      }
    }
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

  // The blocks kept now were kept by earlier calls; the ones this call frees join them.
  void begin_call() {
    std::lock_guard<std::mutex> lock(mutex_);
    kept_before_call_.clear();
    for (const auto& [bytes, block] : kept_) kept_before_call_.insert(block);
  }

  // The blocks kept from before this call and of no use to it are given back.
  void end_call() {
    std::vector<void*> unused;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (auto kept = kept_.begin(); kept != kept_.end();) {
        if (kept_before_call_.count(kept->second) > 0) {
          unused.push_back(kept->second);
          kept = kept_.erase(kept);
        } else {
          ++kept;
        }
      }
      kept_before_call_.clear();
    }
    for (void* block : unused) next_delete_(block);
  }

  void release_kept() {
    std::multimap<std::size_t, void*> kept;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      kept.swap(kept_);
      kept_before_call_.clear();
    }
    for (const auto& [bytes, block] : kept) next_delete_(block);
  }

  static KeptBlockAllocator* installed;

 private:
  static void give_back(void* block) { installed->take_back(block); }

  // A large block lent during a call is kept when a call frees it; an output freed after its
  // call, and any block not lent, goes to the next allocator.
  void take_back(void* block) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto lent = lent_.find(block);
      if (lent != lent_.end()) {
        const std::size_t bytes = lent->second;
        lent_.erase(lent);
        if (calls_on_this_thread > 0) {
          kept_.emplace(bytes, block);
          return;
        }
      }
    }
    next_delete_(block);
  }

  c10::Allocator* next_;
  c10::DeleterFnPtr next_delete_;
  std::mutex mutex_;
  std::unordered_map<void*, std::size_t> lent_;  // large blocks out now, and their sizes
  std::multimap<std::size_t, void*> kept_;       // freed large blocks by size, for reuse
  std::unordered_set<void*> kept_before_call_;   // those kept when the current call began
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

void release_kept_blocks() {
  if (KeptBlockAllocator::installed != nullptr) KeptBlockAllocator::installed->release_kept();
}

}  // namespace nequip::detail
