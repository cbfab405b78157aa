"""Read /etc/nvirt.d: which files count, whether they may be trusted, and their content.

Only regular `*.json` files directly in the directory are read; dotfiles and editor
or package leftovers (`~`, `.swp`, `.bak`, `.dpkg-*`, `.tmp`) never end in `.json`
or start with a dot, so they are skipped by the name rule alone.

Trust (like sshd's StrictModes): the directory and each file must be owned by root
or by the daemon's user and not writable by group or others, and a symlink may not
point outside the directory. A config file can attach any block device to a VM, so
whoever can write it is root.

Parsing is cached by (inode, size, mtime): a reload re-reads only files that changed.
A `*.json` that is not a regular file (a directory, a FIFO: opening one would block)
is skipped and reported as such; a file larger than MAX_FILE_BYTES is an error
without being read (a config of 5,000 domains is about 1.5 MB).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from . import seed_files
from .core.config import ConfigError, ParsedFile, parse_text

MAX_FILE_BYTES = 8 * 2**20
_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket",
          stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device"}


def is_config_name(name: str) -> bool:
    return name.endswith(".json") and not name.startswith(".") and len(name) > len(".json")


def _trust_problem(path: Path, st: os.stat_result, what: str) -> str | None:
    if st.st_uid not in (0, os.geteuid()):
        return f"{what} {path} is owned by uid {st.st_uid}, not root: refused"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{what} {path} is writable by group or others (mode {stat.filemode(st.st_mode)}): refused"
    return None


@dataclass(frozen=True, slots=True)
class DirectoryProblem:
    message: str


@dataclass(frozen=True, slots=True)
class Skipped:
    """A `*.json` entry that is not read, and why (it declares nothing)."""

    file: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: skipped: {self.reason}"


class ConfigReader:
    def __init__(self, directory: str, *, trust_checks: bool = True) -> None:
        path = Path(directory).absolute()
        # a single file (e.g. config.example.json) is read as a directory holding only it
        self.only: str | None = path.name if path.is_file() else None
        self.directory = path.parent if self.only else path
        self.trust_checks = trust_checks
        # file -> (its stat key, what it parsed to, the cloud-init files it read with theirs)
        self._cache: dict[str, tuple[tuple[int, int, int, int], ParsedFile, tuple]] = {}
        self.skipped: list[Skipped] = []  # of the last read
        self.referenced: set[Path] = set()  # the cloud-init files the config files read (watched too)
        # the text of each file that is broken now: it may declare a name (being moved
        # into it from another file, say), so no object of that name is removed meanwhile
        self.broken_texts: dict[str, str] = {}

    def read(self) -> tuple[dict[str, ParsedFile], DirectoryProblem | None]:
        """Every config file's parse result, keyed by file name; or a problem with the directory."""
        try:
            dir_st = os.stat(self.directory)
            names = [self.only] if self.only else sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return {}, DirectoryProblem(f"config directory {self.directory} does not exist")
        except OSError as exc:
            return {}, DirectoryProblem(f"cannot read config directory {self.directory}: {exc.strerror}")
        if self.trust_checks and not self.only:
            problem = _trust_problem(self.directory, dir_st, "config directory")
            if problem:
                return {}, DirectoryProblem(problem)
        results: dict[str, ParsedFile] = {}
        self.skipped = []
        for name in names:
            if is_config_name(name):
                parsed = self._read_one(name)
                if parsed is not None:
                    results[name] = parsed
        self._cache = {k: v for k, v in self._cache.items() if k in results}
        self.referenced = {Path(path) for _, _, deps in self._cache.values() for path, _ in deps}
        self.broken_texts = {k: t for k, t in self.broken_texts.items() if k in results and not results[k].ok}
        return results, None



    def _read_one(self, name: str) -> ParsedFile | None:
        path = self.directory / name
        try:
            lst = os.lstat(path)
            if stat.S_ISLNK(lst.st_mode):
                target = path.resolve()
                if target.parent != self.directory.resolve():
                    return _refused(name, f"{path} is a symlink to {target}, outside {self.directory}: refused")
            st = os.stat(path)
        except FileNotFoundError:
            return None  # removed while we listed: the next event reports it
        if not stat.S_ISREG(st.st_mode):
            kind = _KINDS.get(stat.S_IFMT(st.st_mode), "not a regular file")
            self.skipped.append(Skipped(name, f"{kind}, not a regular file"))
            return None
        if self.trust_checks:
            problem = _trust_problem(path, st, "config file")
            if problem:
                return _refused(name, problem)
        key = seed_files.stat_key(st)
        cached = self._cache.get(name)
        if cached is not None and cached[0] == key and seed_files.current_keys(cached[2]):
            return cached[1]
        if st.st_size > MAX_FILE_BYTES:
            return _refused(name, f"the file is {st.st_size / 2**20:.1f} MiB, more than the "
                                  f"{MAX_FILE_BYTES // 2**20} MiB a config file may be: not read")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            return _refused(name, f"not UTF-8 text (byte {exc.start})")
        except OSError as exc:
            return _refused(name, f"cannot read: {exc.strerror}")
        parsed, deps = seed_files.resolve(parse_text(name, text), self.directory,
                                          _trust_problem if self.trust_checks else None)
        self._cache[name] = (key, parsed, deps)
        if not parsed.ok:
            self.broken_texts[name] = text
        return parsed


def _refused(name: str, reason: str) -> ParsedFile:
    return ParsedFile(file=name, config=None, errors=(ConfigError.at(name, (), reason),))


def may_declare(broken_texts: dict[str, str], name: str) -> str | None:
    """A broken file that may declare `name` (its text names it, or spells names with escapes)."""
    return next((f for f, text in sorted(broken_texts.items()) if f'"{name}"' in text or "\\u" in text), None)
