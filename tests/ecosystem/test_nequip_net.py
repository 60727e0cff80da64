"""nequip.net model IDs wherever a package path is accepted, against a local HTTP server on
127.0.0.1 that serves the site's API and a package (NEQUIP_NET_URL points at it)."""

import hashlib
import http.server
import json
import shutil
import threading
import urllib.parse

import pytest

from nequip.ase import NequIPCalculator
from nequip.ecosystem import nequip_net
from nequip.load import load_model, read_package_metadata
from nequip.scripts.package import main as nequip_package

MODEL_ID = "nequip.net:test-group/CuAu-tiny:0.1"
CACHED_NAME = "test-group--CuAu-tiny--0.1.nequip.zip"


class Site:
    """The API (``/api/models/download/<quoted id>``) and the file (``/files/model.nequip.zip``)."""

    def __init__(self, package):
        self.package = package
        self.requests = []
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                site.requests.append(self.path)
                quoted = urllib.parse.quote("test-group/CuAu-tiny:0.1", safe="")
                if self.path == f"/api/models/download/{quoted}":
                    body = json.dumps({
                        "modelId": "test-group/CuAu-tiny:0.1",
                        "artifact": {"downloadUrl": f"{site.url}/files/model.nequip.zip", "hostName": "local"},
                    }).encode()  # fmt: skip
                elif self.path == "/files/model.nequip.zip":
                    body = site.package.read_bytes()
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def downloads(self):
        return self.requests.count("/files/model.nequip.zip")

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def site(foreign, tmp_path, monkeypatch):
    site = Site(foreign.package("float64"))
    monkeypatch.setenv("NEQUIP_NET_URL", site.url)
    monkeypatch.setenv("NEQUIP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("NEQUIP_NO_CACHE", raising=False)
    monkeypatch.setattr(nequip_net, "_resolved", {})
    yield site
    site.stop()


def test_an_id_is_downloaded_once_into_the_cache_with_its_hash(site, foreign, tmp_path, capsys):
    model = load_model(MODEL_ID)
    assert model.type_names == ["Cu", "Au"]
    cached = tmp_path / "cache" / CACHED_NAME
    assert cached.read_bytes() == foreign.package("float64").read_bytes()
    record = json.loads((tmp_path / "cache" / "test-group--CuAu-tiny--0.1.json").read_text())
    assert record["sha256"] == hashlib.sha256(cached.read_bytes()).hexdigest()
    assert record["download_url"] == f"{site.url}/files/model.nequip.zip"
    assert "downloading nequip.net:test-group/CuAu-tiny:0.1" in capsys.readouterr().err  # the progress bar
    # a new process (nothing resolved yet) takes it from the cache without asking the site
    nequip_net._resolved.clear()
    requests_before = len(site.requests)
    assert read_package_metadata(MODEL_ID)["type_names"] == ["Cu", "Au"]
    assert len(site.requests) == requests_before and site.downloads() == 1


def test_a_cached_file_that_no_longer_matches_its_hash_is_downloaded_again(site, foreign, tmp_path):
    load_model(MODEL_ID)
    cached = tmp_path / "cache" / CACHED_NAME
    cached.write_bytes(b"PK\x03\x04 not the package")
    nequip_net._resolved.clear()
    load_model(MODEL_ID)
    assert site.downloads() == 2
    assert cached.read_bytes() == foreign.package("float64").read_bytes()


def test_no_cache_downloads_every_time_and_leaves_the_cache_empty(site, tmp_path, monkeypatch):
    monkeypatch.setenv("NEQUIP_NO_CACHE", "1")
    load_model(MODEL_ID)
    nequip_net._resolved.clear()
    load_model(MODEL_ID)
    assert site.downloads() == 2
    assert not (tmp_path / "cache").exists()


def test_offline_without_the_file_is_one_message_naming_the_id_the_cache_and_the_way_out(site, tmp_path):
    site.stop()
    with pytest.raises(ValueError) as error:
        load_model(MODEL_ID)
    message = str(error.value)
    assert message.startswith(f"{MODEL_ID}: cannot download it from {site.url} (")
    assert message.endswith(
        f"). Offline, download the package file elsewhere and place it in the cache as "
        f"{tmp_path / 'cache' / CACHED_NAME} (NEQUIP_CACHE_DIR sets the folder), or give the package file's path "
        "instead of the ID"
    )
    assert not (tmp_path / "cache" / CACHED_NAME).exists()


def test_offline_a_file_placed_in_the_cache_by_hand_is_used(site, foreign, tmp_path):
    site.stop()
    (tmp_path / "cache").mkdir()
    shutil.copy(foreign.package("float64"), tmp_path / "cache" / CACHED_NAME)
    assert load_model(MODEL_ID).type_names == ["Cu", "Au"]
    record = json.loads((tmp_path / "cache" / "test-group--CuAu-tiny--0.1.json").read_text())
    assert record["download_url"] == "placed in the cache by hand"


def test_an_unknown_model_is_named(site):
    with pytest.raises(ValueError) as error:
        load_model("nequip.net:test-group/no-such-model:1")
    assert str(error.value).startswith("nequip.net:test-group/no-such-model:1: no such model on nequip.net (")
    assert str(error.value).endswith("answered 404 Not Found)")


def test_a_malformed_id_is_refused_before_any_request(site):
    with pytest.raises(ValueError) as error:
        load_model("nequip.net:NequIP-OAM-L")
    assert str(error.value) == (
        "nequip.net:NequIP-OAM-L: not a nequip.net model ID: expected nequip.net:owner/name:version, "
        "e.g. nequip.net:mir-group/NequIP-OAM-L:0.1"
    )
    assert site.requests == []


def test_the_commands_and_the_calculator_take_an_id(site, foreign, capsys):
    assert nequip_package(["info", MODEL_ID]) == 0
    assert "package_version_id: 2" in capsys.readouterr().out
    expected = foreign.frame("float64", "bulk")
    atoms = expected.atoms.copy()
    atoms.calc = NequIPCalculator(MODEL_ID)
    assert atoms.get_potential_energy() == pytest.approx(expected.total_energy, rel=1e-10)
    assert site.downloads() == 1


def test_fine_tuning_starts_from_an_id(site, tmp_path):
    from nequip.load import OTHER_RELEASE_PACKAGE
    from nequip.train import validate_config
    from nequip.train.training import load_source_model

    config = validate_config({
        "output_dir": str(tmp_path / "run"),
        "data": {"file": str(tmp_path / "data.xyz"), "split": {"train": 2, "val": 1}},
        "model": {"from_package": MODEL_ID},
    })  # fmt: skip
    model = load_source_model(config)
    assert model.type_names == ["Cu", "Au"]
    # what rebuilds it from the checkpoints: the cached file
    assert model.config[OTHER_RELEASE_PACKAGE] == str(tmp_path / "cache" / CACHED_NAME)
    assert site.downloads() == 1
