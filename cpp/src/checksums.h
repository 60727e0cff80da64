// The checksums a compiled file is verified with on load: zip's CRC-32 of each record, and
// the SHA-256 of the content hash that nequip-compile records. Internal to the runtime.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace nequip::detail {

// CRC-32 (the zip format's: polynomial 0xEDB88320, reflected) of `size` bytes, continuing
// from `crc` (0 to start).
uint32_t crc32(const void* data, size_t size, uint32_t crc = 0);

// SHA-256 (FIPS 180-4), fed in pieces.
class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t size);
  // The digest as 64 lowercase hexadecimal digits; the object is spent.
  std::string hex_digest();

 private:
  void compress(const uint8_t* block);
  std::array<uint32_t, 8> state_;
  std::array<uint8_t, 64> buffer_{};
  size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
};

}  // namespace nequip::detail
