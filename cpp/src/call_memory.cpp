// AOTInductor's code allocates all of a call's intermediate buffers as one pool (Inductor's
// memory planning) and frees it before the call returns: hundreds of MiB for the benchmark
// model (docs/benchmarks.md, "A call's memory, kept and read back", has the sizes). glibc maps
// a block that large fresh from the kernel each time and unmaps it when it is freed, so every
// call faulted in and zeroed the same memory again, time spent in the kernel. The layer-by-layer
// parts of a domain file (several LAMMPS ranks) free a pool per part, and the forward parts'
// saved tensors, of many sizes.
//
// Here the torch CPU allocator is wrapped, as torch's CUDA caching allocator manages a GPU's
// memory: during a model call, a large request is carved from segments of memory the runtime
// keeps (best fit, the rest of the free block stays free), and a block freed is merged with its
// free neighbors in its segment; a new segment is mapped only when no free block holds the
// request. Smaller blocks, and every allocation outside a model call, go to torch's allocator
// unchanged. (Keeping freed blocks whole, for requests of about their size only, gave the
// parts either no reuse or 2.5 GiB kept for a call whose live memory peaked at 1.0 GiB.)
//
// Memory: a segment whose blocks are all free is given back when a request needs a new
// segment, and at the end of a call that did not use it, so the process keeps between calls
// about what the last call used at its peak, as torch's CUDA allocator keeps its cache on a GPU.
//
// A new segment is also advised into transparent huge pages (Linux, where THP is "madvise" or
// "always"): the kernels sweep the pool, and with 4 KiB pages they take a TLB miss every few
// rows of a per-edge buffer; the calls are faster with the same peak memory
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
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace nequip::detail {
namespace {

// Below this, glibc's own reuse of freed memory is good enough.
constexpr std::size_t kLargeBlockBytes = std::size_t{1} << 20;
// Blocks carved from a segment start at multiples of this (torch's CPU alignment is 64 bytes).
constexpr std::size_t kBlockAlignment = 512;
// A free remainder smaller than this stays with the block carved before it.
constexpr std::size_t kSmallestRemainder = std::size_t{1} << 16;

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
    const std::size_t bytes = (nbytes + kBlockAlignment - 1) / kBlockAlignment * kBlockAlignment;
    std::vector<void*> released;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (Block* block = take_free_block(bytes)) return lend(block);
      // no free block holds it: the segments left wholly free are of no use to this request
      released = release_free_segments(/*only_unused_in_call=*/false);
    }
    for (void* memory : released) next_delete_(memory);
    c10::DataPtr fresh = next_->allocate(bytes);
    if (fresh.get() == nullptr || fresh.get() != fresh.get_context() ||
        fresh.get_deleter() != next_delete_) {
      return fresh;  // not a plain block of the allocator below: not ours to keep
    }
    void* memory = fresh.release_context();
    advise_huge_pages(memory, bytes);
    std::lock_guard<std::mutex> lock(mutex_);
    auto segment = std::make_unique<Segment>();
    segment->memory = memory;
    segment->bytes = bytes;
    segment->used_in_call = true;
    auto block = std::make_unique<Block>();
    block->segment = segment.get();
    block->address = static_cast<char*>(memory);
    block->bytes = bytes;
    Block* first = block.get();
    blocks_.emplace(first->address, std::move(block));
    segments_.emplace(memory, std::move(segment));
    return lend(first);
  }

  // A raw block (raw_allocate) is freed through here too: ours if lent, else the next's.
  c10::DeleterFnPtr raw_deleter() const override { return next_delete_ ? &give_back : nullptr; }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  void begin_call() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& [memory, segment] : segments_) segment->used_in_call = false;
  }

  // The segments wholly free that this call did not use are given back.
  void end_call() {
    std::vector<void*> released;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      released = release_free_segments(/*only_unused_in_call=*/true);
    }
    for (void* memory : released) next_delete_(memory);
  }

  void release_kept() {
    std::vector<void*> released;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      released = release_free_segments(/*only_unused_in_call=*/false);
    }
    for (void* memory : released) next_delete_(memory);
  }

  static KeptBlockAllocator* installed;

 private:
  struct Segment {
    void* memory = nullptr;  // as the allocator below gave it
    std::size_t bytes = 0;
    std::size_t lent_blocks = 0;
    bool used_in_call = false;
  };
  // A piece of a segment, lent or free; neighbors in address order within the segment.
  struct Block {
    Segment* segment = nullptr;
    char* address = nullptr;
    std::size_t bytes = 0;
    bool lent = false;
    Block* before = nullptr;
    Block* after = nullptr;
  };

  static void give_back(void* address) { installed->take_back(address); }

  // The smallest free block that holds `bytes`, split so that its rest stays free.
  Block* take_free_block(std::size_t bytes) {
    auto fit = free_.lower_bound(bytes);
    if (fit == free_.end()) return nullptr;
    Block* block = fit->second;
    free_.erase(fit);
    if (block->bytes - bytes >= kSmallestRemainder) {
      auto rest = std::make_unique<Block>();
      rest->segment = block->segment;
      rest->address = block->address + bytes;
      rest->bytes = block->bytes - bytes;
      rest->before = block;
      rest->after = block->after;
      if (block->after != nullptr) block->after->before = rest.get();
      block->after = rest.get();
      block->bytes = bytes;
      free_.emplace(rest->bytes, rest.get());
      blocks_.emplace(rest->address, std::move(rest));
    }
    return block;
  }

  c10::DataPtr lend(Block* block) {
    block->lent = true;
    block->segment->lent_blocks += 1;
    block->segment->used_in_call = true;
    void* address = block->address;
    return {address, address, &give_back, c10::Device(c10::DeviceType::CPU)};
  }

  void take_back(void* address) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto found = blocks_.find(static_cast<char*>(address));
      if (found != blocks_.end()) {
        Block* block = found->second.get();
        block->lent = false;
        block->segment->lent_blocks -= 1;
        block = merge_with_free_neighbors(block);
        free_.emplace(block->bytes, block);
        return;
      }
    }
    next_delete_(address);
  }

  Block* merge_with_free_neighbors(Block* block) {
    if (block->after != nullptr && !block->after->lent) absorb_next(block);
    if (block->before != nullptr && !block->before->lent) {
      block = block->before;
      absorb_next(block);
    }
    return block;
  }

  // Joins the free block after `block` to it; both leave the free list (where they are in it:
  // the block being given back is not yet).
  void absorb_next(Block* block) {
    Block* after = block->after;
    forget_free(block);
    forget_free(after);
    block->bytes += after->bytes;
    block->after = after->after;
    if (after->after != nullptr) after->after->before = block;
    blocks_.erase(after->address);
  }

  void forget_free(Block* block) {
    auto [first, last] = free_.equal_range(block->bytes);
    for (auto entry = first; entry != last; ++entry) {
      if (entry->second == block) {
        free_.erase(entry);
        return;
      }
    }
  }

  // Takes the wholly free segments (of those, only the ones the current call did not use)
  // out of the books; returns their memory, to be given back outside the lock.
  std::vector<void*> release_free_segments(bool only_unused_in_call) {
    std::vector<void*> released;
    for (auto entry = segments_.begin(); entry != segments_.end();) {
      Segment* segment = entry->second.get();
      if (segment->lent_blocks > 0 || (only_unused_in_call && segment->used_in_call)) {
        ++entry;
        continue;
      }
      // wholly free: one block, merged, spanning the segment
      Block* block = blocks_.at(static_cast<char*>(segment->memory)).get();
      forget_free(block);
      blocks_.erase(block->address);
      released.push_back(segment->memory);
      entry = segments_.erase(entry);
    }
    return released;
  }

  c10::Allocator* next_;
  c10::DeleterFnPtr next_delete_;
  std::mutex mutex_;
  std::map<void*, std::unique_ptr<Segment>> segments_;
  std::unordered_map<char*, std::unique_ptr<Block>> blocks_;  // by address, lent or free
  std::multimap<std::size_t, Block*> free_;                   // the free blocks by size
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
