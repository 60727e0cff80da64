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
};

// Reads the archive at `path`, a regular file whose extension names its format: the format
// by content (which must be the one the extension names) and the metadata. Throws
// ModelFileError for anything that is not a compiled model of that format.
Archive read_archive(const std::string& path);

}  // namespace nequip::detail
