// Parsing and checking of the model metadata (FILE_CONTRACT §2). Internal to the runtime.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "nequip/runtime.h"

namespace nequip::detail {

// Parses the contract keys of `raw`, the metadata read from `path` (named in every message).
// Throws ModelFileError naming the file and the key when a required key is missing or
// malformed.
Metadata parse_metadata(const std::string& path, std::map<std::string, std::string> raw);

}  // namespace nequip::detail
