"""``nequip-package info`` and ``list`` show what is in a package."""

import json
import zipfile

import yaml

from nequip.package import read_package_metadata
from nequip.scripts.package import main


def test_info_prints_the_metadata_as_yaml(package_path, capsys):
    assert main(["info", str(package_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"# {package_path}\npackage_format_version: 2\n")
    assert yaml.safe_load(out) == read_package_metadata(package_path)


def test_info_json(package_path, capsys):
    assert main(["info", "--json", str(package_path)]) == 0
    assert json.loads(capsys.readouterr().out) == read_package_metadata(package_path)


def test_list_shows_every_entry_with_its_size(package_path, capsys):
    assert main(["list", str(package_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    with zipfile.ZipFile(package_path) as archive:
        infos = archive.infolist()
    assert [line.split()[-1] for line in lines[:-1]] == [info.filename for info in infos]
    assert [int(line.split()[0].replace(",", "")) for line in lines[:-1]] == [info.file_size for info in infos]
    assert lines[-1] == f"{len(infos)} entries, {sum(info.file_size for info in infos):,} bytes"
    assert any(line.endswith("/model/metadata.yaml") for line in lines)
    assert any(line.endswith("/model/default.pkl") for line in lines)
    assert any(line.endswith("/model/example_data.pt") for line in lines)
