#include "archive.h"

#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <unordered_map>

#include "metadata.h"
#include "text.h"
#include "torch_errors.h"

namespace nequip {
namespace detail {

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
  try {
    reader = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
  } catch (const c10::Error&) {
    throw ModelFileError(not_a_model);
  }
  Archive archive = translate_torch_errors(path + ": reading the archive", [&] {
    Archive contents;
    bool has_code = false;
    bool has_aoti_model = false;
    const std::string extra_prefix = "extra/";
    for (const std::string& record : reader->getAllRecords()) {
      if (starts_with(record, "code/")) has_code = true;
      if (starts_with(record, "data/aotinductor/")) has_aoti_model = true;
      if (starts_with(record, extra_prefix) && record.size() > extra_prefix.size()) {
        auto [data, size] = reader->getRecord(record);
        contents.metadata[record.substr(extra_prefix.size())] =
            std::string(static_cast<const char*>(data.get()), size);
      }
    }
    if (has_code && reader->hasRecord("data.pkl") && reader->hasRecord("constants.pkl")) {
      contents.format = ModelFormat::TorchScript;
    } else if (has_aoti_model && reader->hasRecord("archive_format")) {
      contents.format = ModelFormat::AOTInductor;
    } else {
      throw ModelFileError(not_a_model);
    }
    return contents;
  });
  if (archive.format != named) {
    throw ModelFileError(path + ": the file name says " + format_description(named) +
                         " but the file is " + format_description(archive.format));
  }
  if (archive.format == ModelFormat::AOTInductor) {
    // torch's package metadata replaces the extra files (a package has none)
    std::unordered_map<std::string, std::string> stored =
        translate_torch_errors(path + ": reading the AOTInductor metadata", [&] {
          return torch::inductor::AOTIModelPackageLoader::load_metadata_from_package(path, "model");
        });
    archive.metadata = {stored.begin(), stored.end()};
  }
  return archive;
}

}  // namespace detail

Metadata read_metadata(const std::string& path) {
  detail::Archive archive = detail::read_archive(path);
  return detail::parse_metadata(path, std::move(archive.metadata));
}

}  // namespace nequip
