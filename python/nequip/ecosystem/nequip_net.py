"""nequip.net model IDs (``nequip.net:owner/name:version``) wherever a package path is accepted.

nequip.net hosts packages of the other NequIP release (its foundation models, NequIP-OAM-L,
Allegro-OAM, ...). An ID is resolved through the site's API: ``GET
<base>/api/models/download/<url-encoded owner/name:version>`` answers JSON whose
``artifact.downloadUrl`` is the package file. The file is downloaded once into the cache and
used from there afterwards, without asking the site again (a version of a model does not change):

- cache folder: ``$NEQUIP_CACHE_DIR``, by default ``~/.nequip/model_cache`` (the other release's
  default too; the two keep their files under different names);
- a cached model is ``<owner>--<name>--<version>.nequip.zip`` with ``<same>.json`` beside it
  recording the ID, the URL and the file's SHA-256, checked on every reuse (a file that no
  longer matches is downloaded again); a file placed there by hand, without the record, is
  taken as it is and its hash recorded;
- ``NEQUIP_NO_CACHE`` (``1``, ``true``, ``yes``): download into a temporary folder of this
  process instead, every time;
- the download is written beside its final name and renamed when complete (never a partial
  file under the final name), with a progress bar on stderr;
- ``$NEQUIP_NET_URL`` replaces ``https://www.nequip.net`` (tests serve the API locally).

:func:`resolve` is called by :mod:`nequip.load` on every path it is given.
"""

import atexit
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Dict

from nequip.load import ModelFileError
from nequip.utils.atomic_io import WriteError, atomic_path

PREFIX = "nequip.net:"
DEFAULT_BASE_URL = "https://www.nequip.net"
_ID = re.compile(r"^([A-Za-z0-9-]+)/([A-Za-z0-9-]+):([A-Za-z0-9.-]+)$")
_TIMEOUT_S = 30.0
_CHUNK = 1 << 20

# IDs resolved in this process (verified once): ID -> local file
_resolved: Dict[str, Path] = {}


class ModelIdError(ModelFileError):
    """A nequip.net model ID that cannot be resolved to a local package file (a ValueError)."""


def is_model_id(path) -> bool:
    """Whether ``path`` is a nequip.net model ID rather than a file path."""
    return isinstance(path, str) and path.startswith(PREFIX)


def cache_dir() -> Path:
    return Path(os.environ.get("NEQUIP_CACHE_DIR") or Path.home() / ".nequip" / "model_cache").expanduser()


def _no_cache() -> bool:
    return os.environ.get("NEQUIP_NO_CACHE", "").strip().lower() in ("1", "true", "yes", "on")


def resolve(model_id: str, progress: bool = True) -> Path:
    """The local package file of ``model_id`` (``nequip.net:owner/name:version``): from the
    cache, or downloaded into it. Raises ModelIdError (a ValueError) naming the ID."""
    if model_id in _resolved and _resolved[model_id].is_file():
        return _resolved[model_id]
    owner_name_version = model_id[len(PREFIX) :]
    match = _ID.match(owner_name_version)
    if match is None:
        raise ModelIdError(
            f"{model_id}: not a nequip.net model ID: expected nequip.net:owner/name:version, "
            "e.g. nequip.net:mir-group/NequIP-OAM-L:0.1"
        )
    file_name = "--".join(match.groups()) + ".nequip.zip"
    if _no_cache():
        folder = Path(tempfile.mkdtemp(prefix="nequip-net-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        path = _download(model_id, owner_name_version, folder / file_name, progress)
    else:
        path = cache_dir() / file_name
        if not _cached(model_id, path):
            path.parent.mkdir(parents=True, exist_ok=True)
            _download(model_id, owner_name_version, path, progress)
    _resolved[model_id] = path
    return path


def _record(path: Path) -> Path:
    return path.with_name(path.name[: -len(".nequip.zip")] + ".json")


def _cached(model_id: str, path: Path) -> bool:
    """Whether ``path`` holds the model: its recorded hash matches (a file placed by hand,
    without a record, is taken and recorded)."""
    if not path.is_file():
        return False
    record = _record(path)
    sha256 = _sha256(path)
    if not record.is_file():
        _write_record(record, model_id, "placed in the cache by hand", sha256, path.stat().st_size)
        return True
    try:
        recorded = json.loads(record.read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        recorded = None
    if recorded == sha256:
        return True
    print(f"nequip: {path} does not match the hash recorded when it was downloaded; downloading {model_id} again",
          file=sys.stderr)  # fmt: skip
    return False


def _download(model_id: str, owner_name_version: str, path: Path, progress: bool) -> Path:
    base = os.environ.get("NEQUIP_NET_URL", DEFAULT_BASE_URL).rstrip("/")
    api = f"{base}/api/models/download/{urllib.parse.quote(owner_name_version, safe='')}"
    try:
        with urllib.request.urlopen(api, timeout=_TIMEOUT_S) as response:
            answer = json.loads(response.read().decode("utf-8"))
        url = (answer.get("artifact") or {}).get("downloadUrl")
        if not url:
            raise ModelIdError(f"{model_id}: nequip.net names no file to download for it ({api} answered {answer})")
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response, atomic_path(path) as tmp:
            size = int(response.headers.get("Content-Length") or 0)
            digest = hashlib.sha256()
            with open(tmp, "wb") as file, _progress_bar(size, f"{model_id}", progress) as bar:
                while chunk := response.read(_CHUNK):
                    file.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except (WriteError, ModelIdError):
        raise
    except urllib.error.HTTPError as error:
        if error.code == 404:
            raise ModelIdError(f"{model_id}: no such model on nequip.net ({error.url} answered 404 Not Found)") from None
        raise ModelIdError(f"{model_id}: nequip.net answered {error.code} {error.reason} ({error.url})") from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        raise ModelIdError(
            f"{model_id}: cannot download it from {base} ({reason}). Offline, download the package file "
            f"elsewhere and place it in the cache as {cache_dir() / path.name} (NEQUIP_CACHE_DIR sets the "
            "folder), or give the package file's path instead of the ID"
        ) from None
    _write_record(_record(path), model_id, url, digest.hexdigest(), path.stat().st_size)
    return path


def _write_record(record: Path, model_id: str, url: str, sha256: str, size: int) -> None:
    with atomic_path(record) as tmp:
        tmp.write_text(json.dumps({"model_id": model_id, "download_url": url, "sha256": sha256, "bytes": size}, indent=1))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _progress_bar(total: int, what: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total or None, unit="B", unit_scale=True, desc=f"downloading {what}", disable=not enabled,
                file=sys.stderr)  # fmt: skip
