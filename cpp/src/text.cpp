#include "text.h"

#include <sstream>
#include <utility>

namespace nequip::detail {

std::vector<std::string> split_words(const std::string& text) {
  std::istringstream stream(text);
  std::vector<std::string> words;
  for (std::string word; stream >> word;) words.push_back(std::move(word));
  return words;
}

std::vector<std::string> split_on_spaces(const std::string& text) {
  std::vector<std::string> words;
  size_t begin = 0;
  for (size_t end; (end = text.find(' ', begin)) != std::string::npos; begin = end + 1) {
    words.push_back(text.substr(begin, end - begin));
  }
  words.push_back(text.substr(begin));
  return words;
}

std::string printable(const std::string& text) {
  static const char* hex = "0123456789abcdef";
  std::string shown;
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (c == '\t') {
      shown += "\\t";
    } else if (c == '\n') {
      shown += "\\n";
    } else if (c == '\r') {
      shown += "\\r";
    } else if (byte < 0x20 || byte > 0x7e) {
      shown += std::string("\\x") + hex[byte >> 4] + hex[byte & 0xf];
    } else {
      shown += c;
    }
  }
  return shown;
}

std::string join(const std::vector<std::string>& words, const char* separator) {
  std::string joined;
  for (size_t i = 0; i < words.size(); ++i) joined += (i ? separator : "") + words[i];
  return joined;
}

bool starts_with(std::string_view text, std::string_view prefix) {
  return text.substr(0, prefix.size()) == prefix;
}

bool ends_with(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string shape_string(const at::Tensor& tensor) {
  std::ostringstream stream;
  stream << "(";
  for (int64_t d = 0; d < tensor.dim(); ++d) stream << (d ? ", " : "") << tensor.size(d);
  stream << (tensor.dim() == 1 ? ",)" : ")");
  return stream.str();
}

std::string short_number(double value) {
  std::ostringstream stream;
  stream.precision(3);
  stream << value;
  return stream.str();
}

}  // namespace nequip::detail
