#include "metadata.h"

#include "text.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <sstream>
#include <utility>

namespace nequip::detail {
namespace {

class MetadataReader {
 public:
  MetadataReader(const std::string& path, const std::map<std::string, std::string>& raw)
      : path_(path), raw_(raw) {}

  bool has(const std::string& key) const { return raw_.count(key) != 0; }

  const std::string& required(const std::string& key) const {
    auto it = raw_.find(key);
    if (it == raw_.end()) {
      throw ModelFileError(path_ + ": required metadata key '" + key + "' is missing");
    }
    return it->second;
  }

  [[noreturn]] void malformed(const std::string& key, const std::string& expected) const {
    throw ModelFileError(path_ + ": metadata key '" + key + "' is malformed: expected " + expected +
                         ", got '" + printable(raw_.at(key)) + "'");
  }

  double parse_float(const std::string& key, const std::string& word,
                     const std::string& expected) const {
    const char* begin = word.c_str();
    char* end = nullptr;
    errno = 0;
    double value = std::strtod(begin, &end);
    // strtod would skip leading whitespace: a tab or newline is not a separator here
    if (word.empty() || std::isspace(static_cast<unsigned char>(word[0])) ||
        end != begin + word.size() || errno != 0 || !std::isfinite(value)) {
      malformed(key, expected);
    }
    return value;
  }

  // A present key holding one positive decimal float (surrounding whitespace allowed).
  double positive_float(const std::string& key) const {
    const char* expected = "a positive decimal float";
    std::vector<std::string> words = split_words(raw_.at(key));
    if (words.size() != 1) malformed(key, expected);
    const double value = parse_float(key, words[0], expected);
    if (!(value > 0.0)) malformed(key, expected);
    return value;
  }

  int64_t parse_int(const std::string& key, const std::string& word,
                    const std::string& expected) const {
    const char* begin = word.c_str();
    char* end = nullptr;
    errno = 0;
    long long value = std::strtoll(begin, &end, 10);
    if (word.empty() || end != begin + word.size() || errno != 0) malformed(key, expected);
    return value;
  }

 private:
  const std::string& path_;
  const std::map<std::string, std::string>& raw_;
};

}  // namespace

Metadata parse_metadata(const std::string& path, std::map<std::string, std::string> raw) {
  MetadataReader reader(path, raw);
  Metadata metadata;

  const std::string dtype_words = reader.required("model_dtype");
  std::vector<std::string> dtype = split_words(dtype_words);
  if (dtype.size() != 1 || (dtype[0] != "float32" && dtype[0] != "float64")) {
    reader.malformed("model_dtype", "'float32' or 'float64'");
  }
  metadata.model_dtype = dtype[0];

  const std::string num_types_text = reader.required("num_types");
  std::vector<std::string> num_types_words = split_words(num_types_text);
  const char* positive_integer = "a positive decimal integer";
  if (num_types_words.size() != 1) reader.malformed("num_types", positive_integer);
  metadata.num_types = reader.parse_int("num_types", num_types_words[0], positive_integer);
  if (metadata.num_types < 1) reader.malformed("num_types", positive_integer);

  // FILE_CONTRACT §2: names joined by single spaces. Anything else (an empty name from a
  // leading, trailing or double space; a tab or newline inside a name) is refused rather than
  // guessed at: every reader must see the same names.
  metadata.type_names = split_on_spaces(reader.required("type_names"));
  for (const std::string& name : metadata.type_names) {
    const bool visible_ascii = !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
      return static_cast<unsigned char>(c) > 0x20 && static_cast<unsigned char>(c) < 0x7f;
    });
    if (!visible_ascii) {
      reader.malformed("type_names", "names of visible ASCII characters joined by single spaces");
    }
  }
  if (static_cast<int64_t>(metadata.type_names.size()) != metadata.num_types) {
    reader.malformed("type_names", std::to_string(metadata.num_types) +
                                       " names joined by single spaces (num_types)");
  }
  for (size_t i = 0; i < metadata.type_names.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (metadata.type_names[i] == metadata.type_names[j]) {
        reader.malformed("type_names",
                         "distinct names ('" + metadata.type_names[i] + "' appears twice)");
      }
    }
  }

  reader.required("r_max");
  metadata.r_max = reader.positive_float("r_max");

  // Optional, present only when used (absent: every pair uses r_max); an empty value is
  // malformed, like any other list of the wrong length.
  if (reader.has("per_edge_type_cutoff")) {
    std::vector<std::string> words = split_on_spaces(raw.at("per_edge_type_cutoff"));
    const int64_t num_pairs = metadata.num_types * metadata.num_types;
    const std::string expected = std::to_string(num_pairs) +
                                 " (num_types squared) floats in (0, r_max] joined by single "
                                 "spaces";
    if (static_cast<int64_t>(words.size()) != num_pairs) {
      reader.malformed("per_edge_type_cutoff", expected);
    }
    for (const std::string& word : words) {
      double cutoff = reader.parse_float("per_edge_type_cutoff", word, expected);
      if (!(cutoff > 0.0) || cutoff > metadata.r_max) {
        reader.malformed("per_edge_type_cutoff", expected);
      }
      metadata.per_edge_type_cutoff.push_back(cutoff);
    }
  }

  std::vector<std::string> tf32_words = split_words(reader.required("allow_tf32"));
  if (tf32_words.size() != 1 || (tf32_words[0] != "0" && tf32_words[0] != "1")) {
    reader.malformed("allow_tf32", "'0' or '1'");
  }
  metadata.allow_tf32 = tf32_words[0] == "1";

  // Project key, optional (files of other producers, older files): absent means unknown.
  if (reader.has("num_layers")) {
    std::vector<std::string> words = split_words(raw.at("num_layers"));
    if (words.size() != 1) reader.malformed("num_layers", positive_integer);
    metadata.num_layers = reader.parse_int("num_layers", words[0], positive_integer);
    if (metadata.num_layers < 1) reader.malformed("num_layers", positive_integer);
  }

  // Project key, optional: the width of the node features out of each layer, for the
  // per-layer feature exchange of LAMMPS on several ranks (files that lack it cannot do it).
  if (reader.has("layer_feature_widths")) {
    const std::string expected = std::to_string(metadata.num_layers) +
                                 " (num_layers) positive decimal integers joined by single spaces";
    if (metadata.num_layers < 1) {
      throw ModelFileError(path +
                           ": metadata key 'layer_feature_widths' needs the key "
                           "'num_layers', which is missing");
    }
    std::vector<std::string> words = split_on_spaces(raw.at("layer_feature_widths"));
    if (static_cast<int64_t>(words.size()) != metadata.num_layers) {
      reader.malformed("layer_feature_widths", expected);
    }
    for (const std::string& word : words) {
      const int64_t width = reader.parse_int("layer_feature_widths", word, expected);
      if (width < 1) reader.malformed("layer_feature_widths", expected);
      metadata.layer_feature_widths.push_back(width);
    }
  }

  // Project key, optional: the number of models of a committee file (absent: one model).
  if (reader.has("committee_size")) {
    const char* at_least_two = "a decimal integer of at least 2";
    std::vector<std::string> words = split_words(raw.at("committee_size"));
    if (words.size() != 1) reader.malformed("committee_size", at_least_two);
    metadata.committee_size = reader.parse_int("committee_size", words[0], at_least_two);
    if (metadata.committee_size < 2) reader.malformed("committee_size", at_least_two);
  }

  // Project key, optional: each member's layer_feature_widths, members joined by "; " (a
  // committee file that runs layer by layer: each member's layers with their own exchanges).
  if (reader.has("committee_layer_feature_widths")) {
    const std::string expected =
        "committee_size (" + std::to_string(metadata.committee_size) +
        ") lists of positive decimal integers joined by single spaces, the lists joined by '; '";
    const std::string& value = raw.at("committee_layer_feature_widths");
    std::vector<std::string> lists;
    size_t start = 0;
    for (size_t end; (end = value.find("; ", start)) != std::string::npos; start = end + 2) {
      lists.push_back(value.substr(start, end - start));
    }
    lists.push_back(value.substr(start));
    if (static_cast<int64_t>(lists.size()) != metadata.committee_size || lists.size() < 2) {
      reader.malformed("committee_layer_feature_widths", expected);
    }
    for (const std::string& list : lists) {
      std::vector<int64_t> widths;
      for (const std::string& word : split_on_spaces(list)) {
        const int64_t width = reader.parse_int("committee_layer_feature_widths", word, expected);
        if (width < 1) reader.malformed("committee_layer_feature_widths", expected);
        widths.push_back(width);
      }
      if (widths.empty()) reader.malformed("committee_layer_feature_widths", expected);
      metadata.committee_layer_feature_widths.push_back(std::move(widths));
    }
  }

  // Project key, optional: absent in files of other producers and older ones.
  if (reader.has("closest_training_pair")) {
    metadata.closest_training_pair = reader.positive_float("closest_training_pair");
  }

  // Project key, optional: a pair potential added to the learned energy, by name.
  if (reader.has("pair_potential")) {
    std::vector<std::string> words = split_words(raw.at("pair_potential"));
    if (words.size() != 1 || words[0] != "zbl") reader.malformed("pair_potential", "'zbl'");
    metadata.pair_potential = words[0];
  }

  // Project key, optional: the layer parts compute the rows they are given (older files: all).
  if (reader.has("layer_rows")) {
    std::vector<std::string> words = split_words(raw.at("layer_rows"));
    if (words.size() != 1 || words[0] != "selected") reader.malformed("layer_rows", "'selected'");
    metadata.layers_select_rows = true;
  }

  // The device type the file was compiled for: torch's key in a .pt2, ours in a .pth;
  // absent (files of other producers, older files) means any.
  for (const char* key : {"AOTI_DEVICE_KEY", "compile_device"}) {
    if (!reader.has(key)) continue;
    const std::string& value = raw.at(key);
    if (value != "cpu" && value != "cuda") reader.malformed(key, "'cpu' or 'cuda'");
    metadata.compiled_for = value;
    break;
  }

  metadata.raw = std::move(raw);
  return metadata;
}

}  // namespace nequip::detail

namespace nequip {

Metadata check_metadata(const std::string& source, std::map<std::string, std::string> raw) {
  return detail::parse_metadata(source, std::move(raw));
}

double close_pair_threshold(const std::string& source,
                            const std::map<std::string, std::string>& metadata) {
  detail::MetadataReader reader(source, metadata);
  reader.required("r_max");
  if (reader.has("closest_training_pair")) return reader.positive_float("closest_training_pair");
  return NonFiniteOutputError::kOverlapFraction * reader.positive_float("r_max");
}

}  // namespace nequip
