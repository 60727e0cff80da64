#include "archive.h"

#include <caffe2/serialize/inline_container.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>

#include "checksums.h"
#include "metadata.h"
#include "text.h"
#include "torch_errors.h"

namespace nequip {
namespace detail {
namespace {

constexpr const char* kContentHashPrefix = "sha256:";

// A record of the zip's central directory.
struct ZipEntry {
  std::string name;  // relative to the archive's top directory, as torch's reader names it
  uint32_t crc = 0;
  uint64_t size = 0;  // uncompressed
};

uint64_t little_endian(const char* bytes, int size) {
  uint64_t value = 0;
  for (int i = size - 1; i >= 0; --i) value = value << 8 | static_cast<uint8_t>(bytes[i]);
  return value;
}

// The records of the zip at `path` with the CRC-32 and size its central directory states for
// each (zip64 or not), or nothing when the directory cannot be read (then neither can torch).
std::optional<std::vector<ZipEntry>> central_directory(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) return std::nullopt;
  file.seekg(0, std::ios::end);
  const uint64_t file_size = static_cast<uint64_t>(file.tellg());
  // the end of central directory record (22 bytes) follows at most a 65535-byte comment
  const uint64_t tail_size = std::min<uint64_t>(file_size, 22 + 65535 + 20);
  std::string tail(tail_size, '\0');
  file.seekg(static_cast<std::streamoff>(file_size - tail_size));
  if (!file.read(tail.data(), static_cast<std::streamsize>(tail_size))) return std::nullopt;
  size_t end_record = std::string::npos;
  for (size_t at = tail_size >= 22 ? tail_size - 22 : std::string::npos; at != std::string::npos;
       at = at ? at - 1 : std::string::npos) {
    if (little_endian(&tail[at], 4) == 0x06054b50) {
      end_record = at;
      break;
    }
  }
  if (end_record == std::string::npos) return std::nullopt;
  uint64_t num_entries = little_endian(&tail[end_record + 10], 2);
  uint64_t directory_size = little_endian(&tail[end_record + 12], 4);
  uint64_t directory_offset = little_endian(&tail[end_record + 16], 4);
  // zip64: a locator right before, pointing at the zip64 end record with 8-byte fields
  if (end_record >= 20 && little_endian(&tail[end_record - 20], 4) == 0x07064b50) {
    const uint64_t zip64_offset = little_endian(&tail[end_record - 20 + 8], 8);
    char zip64[56];
    file.seekg(static_cast<std::streamoff>(zip64_offset));
    if (!file.read(zip64, sizeof(zip64)) || little_endian(zip64, 4) != 0x06064b50) {
      return std::nullopt;
    }
    num_entries = little_endian(zip64 + 32, 8);
    directory_size = little_endian(zip64 + 40, 8);
    directory_offset = little_endian(zip64 + 48, 8);
  }
  if (directory_offset + directory_size > file_size) return std::nullopt;
  std::string directory(directory_size, '\0');
  file.seekg(static_cast<std::streamoff>(directory_offset));
  if (!file.read(directory.data(), static_cast<std::streamsize>(directory_size))) {
    return std::nullopt;
  }

  std::vector<ZipEntry> entries;
  size_t at = 0;
  for (uint64_t i = 0; i < num_entries; ++i) {
    if (at + 46 > directory.size() || little_endian(&directory[at], 4) != 0x02014b50) {
      return std::nullopt;
    }
    const char* header = &directory[at];
    const uint64_t name_size = little_endian(header + 28, 2);
    const uint64_t extra_size = little_endian(header + 30, 2);
    const uint64_t comment_size = little_endian(header + 32, 2);
    if (at + 46 + name_size + extra_size + comment_size > directory.size()) return std::nullopt;
    ZipEntry entry;
    entry.name = directory.substr(at + 46, name_size);
    entry.crc = static_cast<uint32_t>(little_endian(header + 16, 4));
    entry.size = little_endian(header + 24, 4);
    if (entry.size == 0xFFFFFFFFu) {  // in the zip64 extra field, its first value
      const char* extra = header + 46 + name_size;
      for (uint64_t field = 0; field + 4 <= extra_size;) {
        const uint64_t id = little_endian(extra + field, 2);
        const uint64_t length = little_endian(extra + field + 2, 2);
        if (id == 0x0001 && length >= 8) entry.size = little_endian(extra + field + 4, 8);
        field += 4 + length;
      }
    }
    at += 46 + name_size + extra_size + comment_size;
    // torch's reader names records below the archive's top directory; directories hold nothing
    const size_t slash = entry.name.find('/');
    if (slash == std::string::npos || entry.name.back() == '/') continue;
    entry.name = entry.name.substr(slash + 1);
    entries.push_back(std::move(entry));
  }
  return entries;
}

// The values of a JSON object whose values are all strings (an AOTInductor package's
// metadata, as torch writes it), or nothing when `text` is not one.
std::optional<std::map<std::string, std::string>> json_strings(const std::string& text) {
  size_t at = 0;
  auto skip_space = [&] {
    while (at < text.size() && std::strchr(" \t\n\r", text[at]) != nullptr && text[at]) ++at;
  };
  auto hex4 = [&](uint32_t& value) {
    if (at + 4 > text.size()) return false;
    value = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = text[at++];
      const int digit =
          std::isxdigit(static_cast<unsigned char>(c))
              ? (std::isdigit(static_cast<unsigned char>(c)) ? c - '0' : (c | 0x20) - 'a' + 10)
              : -1;
      if (digit < 0) return false;
      value = value << 4 | static_cast<uint32_t>(digit);
    }
    return true;
  };
  auto string = [&](std::string& out) {
    if (at >= text.size() || text[at++] != '"') return false;
    while (at < text.size() && text[at] != '"') {
      char c = text[at++];
      if (c != '\\') {
        out += c;
        continue;
      }
      if (at >= text.size()) return false;
      c = text[at++];
      uint32_t code = 0;
      switch (c) {
        case '"':
        case '\\':
        case '/':
          out += c;
          continue;
        case 'b':
          out += '\b';
          continue;
        case 'f':
          out += '\f';
          continue;
        case 'n':
          out += '\n';
          continue;
        case 'r':
          out += '\r';
          continue;
        case 't':
          out += '\t';
          continue;
        case 'u':
          if (!hex4(code)) return false;
          break;
        default:
          return false;
      }
      if (code >= 0xD800 && code < 0xDC00) {  // a surrogate pair
        uint32_t low = 0;
        if (at + 2 > text.size() || text[at] != '\\' || text[at + 1] != 'u') return false;
        at += 2;
        if (!hex4(low) || low < 0xDC00 || low >= 0xE000) return false;
        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
      }
      // UTF-8
      if (code < 0x80) {
        out += static_cast<char>(code);
      } else if (code < 0x800) {
        out += static_cast<char>(0xC0 | code >> 6);
        out += static_cast<char>(0x80 | (code & 0x3F));
      } else if (code < 0x10000) {
        out += static_cast<char>(0xE0 | code >> 12);
        out += static_cast<char>(0x80 | (code >> 6 & 0x3F));
        out += static_cast<char>(0x80 | (code & 0x3F));
      } else {
        out += static_cast<char>(0xF0 | code >> 18);
        out += static_cast<char>(0x80 | (code >> 12 & 0x3F));
        out += static_cast<char>(0x80 | (code >> 6 & 0x3F));
        out += static_cast<char>(0x80 | (code & 0x3F));
      }
    }
    return at++ < text.size();
  };
  std::map<std::string, std::string> values;
  skip_space();
  if (at >= text.size() || text[at++] != '{') return std::nullopt;
  skip_space();
  if (at < text.size() && text[at] == '}') {
    ++at;
  } else {
    while (true) {
      std::string key, value;
      skip_space();
      if (!string(key)) return std::nullopt;
      skip_space();
      if (at >= text.size() || text[at++] != ':') return std::nullopt;
      skip_space();
      if (!string(value)) return std::nullopt;
      values[key] = value;
      skip_space();
      if (at >= text.size()) return std::nullopt;
      const char next = text[at++];
      if (next == '}') break;
      if (next != ',') return std::nullopt;
    }
  }
  skip_space();
  if (at != text.size()) return std::nullopt;
  return values;
}

std::string damaged(const std::string& path, const std::string& detail) {
  return path + ": the file is damaged or was edited after it was written (" + detail +
         "): compile it again";
}

// Every record of the archive read once: its CRC-32 checked against the central directory,
// the content hash computed when `hash` is given (records in name order; see docs/files.md),
// and the metadata records kept.
struct RecordPass {
  std::map<std::string, std::string> extra_files;  // .pth: extra/<key>
  std::optional<std::string> aoti_metadata;        // .pt2: the wrapper's _metadata.json
  std::string aoti_metadata_record;
  std::optional<std::string> stored_hash;
  std::string computed_hash;
  bool has_code = false, has_aoti_model = false, has_archive_format = false;
  bool has_data_pkl = false, has_constants_pkl = false;
};

RecordPass read_records(const std::string& path, caffe2::serialize::PyTorchStreamReader& reader,
                        std::vector<ZipEntry> entries) {
  RecordPass pass;
  std::sort(entries.begin(), entries.end(),
            [](const ZipEntry& a, const ZipEntry& b) { return a.name < b.name; });
  Sha256 hash;
  const std::string extra_prefix = "extra/";
  for (const ZipEntry& entry : entries) {
    auto [data, size] = reader.getRecord(entry.name);
    const char* bytes = static_cast<const char*>(data.get());
    if (size != entry.size || crc32(bytes, size) != entry.crc) {
      throw ModelFileError(damaged(path, "its record '" + entry.name + "' fails its zip checksum"));
    }
    const std::string& name = entry.name;
    if (name == kContentHashRecord) {
      pass.stored_hash = std::string(bytes, size);
      continue;
    }
    const uint64_t name_size = name.size();
    const uint64_t record_size = size;
    hash.update(name.data(), name.size());
    hash.update("\0", 1);
    for (uint64_t value : {name_size, record_size}) {
      uint8_t little[8];
      for (int i = 0; i < 8; ++i) little[i] = static_cast<uint8_t>(value >> (8 * i));
      hash.update(little, 8);
    }
    hash.update(bytes, size);

    if (starts_with(name, "code/")) pass.has_code = true;
    if (starts_with(name, "data/aotinductor/")) pass.has_aoti_model = true;
    pass.has_archive_format |= name == "archive_format";
    pass.has_data_pkl |= name == "data.pkl";
    pass.has_constants_pkl |= name == "constants.pkl";
    if (starts_with(name, extra_prefix) && name.size() > extra_prefix.size()) {
      pass.extra_files[name.substr(extra_prefix.size())] = std::string(bytes, size);
    }
    // torch's reader takes the first of the main model's wrapper metadata (model_package_loader)
    if (!pass.aoti_metadata && starts_with(name, "data/aotinductor/model/") &&
        ends_with(name, "wrapper_metadata.json")) {
      pass.aoti_metadata = std::string(bytes, size);
      pass.aoti_metadata_record = name;
    }
  }
  pass.computed_hash = kContentHashPrefix + hash.hex_digest();
  return pass;
}

}  // namespace

ModelFormat format_from_extension(const std::string& path) {
  if (ends_with(path, ".pth")) return ModelFormat::TorchScript;
  if (ends_with(path, ".pt2")) return ModelFormat::AOTInductor;
  throw ModelFileError(path +
                       ": unknown model file extension: expected .nequip.pth (TorchScript) "
                       "or .nequip.pt2 (AOTInductor)");
}

const char* format_description(ModelFormat format) {
  return format == ModelFormat::TorchScript ? "a TorchScript archive (.nequip.pth)"
                                            : "an AOTInductor package (.nequip.pt2)";
}

Archive read_archive(const std::string& path) {
  const ModelFormat named = format_from_extension(path);
  if (!std::filesystem::is_regular_file(path)) throw ModelFileError(path + ": no such file");
  const std::string not_a_model =
      path +
      ": not a compiled NequIP model (neither a TorchScript archive nor an AOTInductor "
      "package)";
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> reader;
  std::optional<std::vector<ZipEntry>> entries;
  try {
    reader = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
    reader->getAllRecords();  // every record below one top directory, as torch needs
    entries = central_directory(path);
  } catch (const c10::Error&) {
    throw ModelFileError(not_a_model);
  }
  if (!entries) throw ModelFileError(not_a_model);
  RecordPass pass = translate_torch_errors(path + ": reading the archive", [&] {
    return read_records(path, *reader, std::move(*entries));
  });

  Archive archive;
  if (pass.has_code && pass.has_data_pkl && pass.has_constants_pkl) {
    archive.format = ModelFormat::TorchScript;
  } else if (pass.has_aoti_model && pass.has_archive_format) {
    archive.format = ModelFormat::AOTInductor;
  } else {
    throw ModelFileError(not_a_model);
  }
  if (archive.format != named) {
    throw ModelFileError(path + ": the file name says " + format_description(named) +
                         " but the file is " + format_description(archive.format));
  }
  // Files of other producers and of older versions carry no hash: their CRCs are all there is.
  if (pass.stored_hash && *pass.stored_hash != pass.computed_hash) {
    throw ModelFileError(damaged(path,
                                 "its content does not match the content hash recorded when it "
                                 "was compiled, record '" +
                                     std::string(kContentHashRecord) + "'"));
  }
  archive.content_hash = pass.computed_hash;
  if (archive.format == ModelFormat::TorchScript) {
    archive.metadata = std::move(pass.extra_files);
  } else {
    // torch's package metadata; a package has no extra files
    if (!pass.aoti_metadata) {
      throw ModelFileError(path +
                           ": the AOTInductor package has no metadata (no record "
                           "'data/aotinductor/model/*wrapper_metadata.json')");
    }
    std::optional<std::map<std::string, std::string>> values = json_strings(*pass.aoti_metadata);
    if (!values) {
      throw ModelFileError(path + ": the AOTInductor metadata (record '" +
                           pass.aoti_metadata_record + "') is not a JSON object of strings");
    }
    archive.metadata = std::move(*values);
  }
  return archive;
}

}  // namespace detail

Metadata read_metadata(const std::string& path) {
  detail::Archive archive = detail::read_archive(path);
  return detail::parse_metadata(path, std::move(archive.metadata));
}

std::string content_hash(const std::string& path) {
  return detail::read_archive(path).content_hash;
}

}  // namespace nequip
