"""A search's output directory: the small meta file that names its study and storage, so
``blis report`` (and a moved directory) can re-open the study without the original command."""

from __future__ import annotations

import json
from pathlib import Path

import optuna

from blis.errors import ConfigError
from search.storage import StorageTarget, open_storage, quiet_optuna, resolve_storage

META_NAME = "search.json"


def default_out_dir(spec) -> Path:
    return Path("out") / spec.name


def write_meta(out_dir: Path, study_name: str, storage: str) -> None:
    (out_dir / META_NAME).write_text(json.dumps({"study_name": study_name, "storage": storage}, indent=2) + "\n")


def load_run(out_dir: Path) -> tuple[optuna.Study, object]:
    """Re-open a search's study from its output directory (used by ``blis report``)."""
    from search.study_file import parse_study

    meta_path = out_dir / META_NAME
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise ConfigError("out_dir", f"{out_dir} holds no search (missing {META_NAME})") from None
    storage = meta["storage"]
    if "://" not in storage and not Path(storage).is_absolute():
        storage = str(out_dir / storage)
    target = resolve_storage(storage, out_dir)
    own = resolve_storage(None, out_dir)
    if _missing(target) and not _missing(own):
        target = own  # the output directory was moved with its journal
    if _missing(target):
        raise ConfigError("storage", f"{target.where} (recorded in {meta_path}) does not exist")
    quiet_optuna()
    try:
        study = optuna.load_study(study_name=meta["study_name"], storage=open_storage(target))
    except KeyError:
        raise ConfigError("storage", f"{target.where} holds no study named {meta['study_name']!r}") from None
    spec = parse_study(study.user_attrs["spec"], default_name=meta["study_name"])
    return study, spec


def _missing(target: StorageTarget) -> bool:
    """A file-backed storage whose file is gone (opening it would create an empty study store)."""
    local = target.local_file
    return local is not None and not local.exists()
