// Parsing and checking of the model metadata (FILE_CONTRACT §2). Internal to the runtime.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "nequip/runtime.h"

namespace nequip::detail {

// Splits on runs of whitespace; no empty words.
std::vector<std::string> split_words(const std::string& text);

// Splits on each single space, as FILE_CONTRACT §2 joins lists: "a  b" gives "a", "", "b".
std::vector<std::string> split_on_spaces(const std::string& text);

// `text` with tabs, newlines and other bytes outside printable ASCII escaped (\t, \n,
// \xNN), so that a message quoting a stored value shows what is wrong with it.
std::string printable(const std::string& text);

// Parses the contract keys of `raw`, the metadata read from `path` (named in every message).
// Throws ModelFileError naming the file and the key when a required key is missing or
// malformed.
Metadata parse_metadata(const std::string& path, std::map<std::string, std::string> raw);

}  // namespace nequip::detail
