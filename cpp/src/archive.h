// Reading a compiled file's zip archive: which format it holds (by content) and its metadata
// as stored. Internal to the runtime.
#pragma once

#include <map>
#include <string>

#include "nequip/runtime.h"

namespace nequip::detail {

// The format the file name promises; ModelFileError for an unknown extension.
ModelFormat format_from_extension(const std::string& path);

// "a TorchScript archive (.nequip.pth)", "an AOTInductor package (.nequip.pt2)".
const char* format_description(ModelFormat format);

struct Archive {
  ModelFormat format = ModelFormat::TorchScript;
  // Every key as stored: a .pth's extra files, a .pt2's package metadata.
  std::map<std::string, std::string> metadata;
  // "sha256:<64 hex digits>" of every record but the recorded hash (docs/files.md).
  std::string content_hash;
};

// Reads the archive at `path`, a regular file whose extension names its format, record by
// record, once: the format by content (which must be the one the extension names), every
// record's CRC-32 against the zip's central directory, the content hash against the one
// nequip-compile recorded (files without one, of other producers or older versions, have their
// CRCs checked only), and the metadata. Throws ModelFileError for anything that is not an
// intact compiled model of that format, before any of its native code is loaded.
Archive read_archive(const std::string& path);

}  // namespace nequip::detail
