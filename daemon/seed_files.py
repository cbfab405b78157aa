"""cloudInit parts given as files (`userDataFile`, ...): read with the config file that names them.

Their text goes into the parsed spec, so the rest of nvirtd sees the seed's content only
(rendering stays pure, and the seed's path carries the digest of that content). A file
named relatively is in the config directory. It is trusted as a config file is (owned
by root or the daemon's user, not writable by group or others: its content runs as
root in the guest), at most 1 MiB, UTF-8. A missing or refused file is an error naming
the config file and the field; that config file keeps its last good content.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Callable

from .core.config import ConfigError, ParsedFile
from .core.spec_images import MAX_SEED_PART, SEED_PARTS

StatKey = tuple[int, int, int, int]
TrustCheck = Callable[[Path, os.stat_result, str], "str | None"]


def stat_key(st: os.stat_result) -> StatKey:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def current_keys(deps: tuple[tuple[str, StatKey | None], ...]) -> bool:
    """Whether every file a cached parse read is still as it was (a missing one stays missing)."""
    for path, key in deps:
        try:
            now: StatKey | None = stat_key(os.stat(path))
        except OSError:
            now = None
        if now != key:
            return False
    return True


def resolve(parsed: ParsedFile, directory: Path, trust: TrustCheck | None
            ) -> tuple[ParsedFile, tuple[tuple[str, StatKey | None], ...]]:
    """The parsed file with each cloudInit file's text in place; and the files it read, with
    their stat keys, for the cache. Errors make the whole file broken (as a bad field would)."""
    if parsed.config is None:
        return parsed, ()
    deps: list[tuple[str, StatKey | None]] = []
    errors: list[ConfigError] = []
    domains = dict(parsed.config.domains)
    for dom_name, dom in parsed.config.domains.items():
        seed = dom.cloud_init
        if seed is None or not seed.files:
            continue
        update = {}
        for attr, alias, _ in SEED_PARTS:
            name = getattr(seed, attr + "_file")
            if name is None:
                continue
            path = Path(name) if name.startswith("/") else directory / name
            text, key, problem = _read(path, trust)
            deps.append((str(path), key))
            if problem is not None:
                errors.append(ConfigError.at(parsed.file, ("domains", dom_name, "cloudInit", alias + "File"), problem))
            else:
                update[attr] = text
        domains[dom_name] = dom.model_copy(update={"cloud_init": seed.model_copy(update=update)})
    if errors:
        return ParsedFile(parsed.file, None, tuple(errors)), tuple(deps)
    if not deps:
        return parsed, ()  # no file read: nothing to put in (and nothing to copy)
    return ParsedFile(parsed.file, parsed.config.model_copy(update={"domains": domains})), tuple(deps)


def _read(path: Path, trust: TrustCheck | None) -> tuple[str, StatKey | None, str | None]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "", None, f"{path} does not exist"
    except OSError as exc:
        return "", None, f"cannot read {path}: {exc.strerror}"
    key = stat_key(st)
    if not stat.S_ISREG(st.st_mode):
        return "", key, f"{path} is not a regular file"
    if trust is not None:
        problem = trust(path, st, "cloud-init file")
        if problem:
            return "", key, problem
    if st.st_size > MAX_SEED_PART:
        return "", key, f"{path} is {st.st_size} bytes, more than the {MAX_SEED_PART // 2**20} MiB a seed part may be"
    try:
        return path.read_text(encoding="utf-8"), key, None
    except UnicodeDecodeError as exc:
        return "", key, f"{path} is not UTF-8 text (byte {exc.start})"
    except OSError as exc:
        return "", key, f"cannot read {path}: {exc.strerror}"
