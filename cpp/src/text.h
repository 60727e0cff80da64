// Text helpers for the runtime's messages and metadata. Internal to the runtime.
#pragma once

#include <ATen/Tensor.h>

#include <string>
#include <string_view>
#include <vector>

namespace nequip::detail {

// Splits on runs of whitespace; no empty words.
std::vector<std::string> split_words(const std::string& text);

// Splits on each single space, as FILE_CONTRACT §2 joins lists: "a  b" gives "a", "", "b".
std::vector<std::string> split_on_spaces(const std::string& text);

// `text` with tabs, newlines and other bytes outside printable ASCII escaped (\t, \n,
// \xNN), so that a message quoting a stored value shows what is wrong with it.
std::string printable(const std::string& text);

std::string join(const std::vector<std::string>& words, const char* separator = " ");

bool starts_with(std::string_view text, std::string_view prefix);
bool ends_with(std::string_view text, std::string_view suffix);

// "(N, 3)", "(N,)": numpy's way, which users of both front ends know.
std::string shape_string(const at::Tensor& tensor);

// Three significant digits: enough for distances in messages ("0", "0.4", "1.23e-05").
std::string short_number(double value);

}  // namespace nequip::detail
