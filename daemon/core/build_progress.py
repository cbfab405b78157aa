"""How far a nix build is, from the lines it writes to stderr. PURE.

nix-build and `nix build -L` say up front how much there is to do ("these 412
derivations will be built:", "this derivation will be built:", "these 30 paths will
be fetched (...)"), then one line per derivation they start ("building
'/nix/store/...drv'...") and per path they fetch ("copying path '...' from ..."),
between the builders' own log lines. That is enough for what `nvirtd status` shows
while an image builds: for how long, how many derivations are left to start, and
the last line the build wrote.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TO_BUILD = re.compile(r"^(?:these (\d+) derivations|this derivation) will be built")
_TO_FETCH = re.compile(r"^(?:these (\d+) paths|this path) will be fetched")
_STARTED = re.compile(r"^building '/[^']+\.drv'")
_FETCHED = re.compile(r"^copying path '")
_LOG_PREFIX = re.compile(r"^[\w.+-]+> ")  # `nix build -L` prefixes a builder's lines with its name
LAST_LINE_CHARS = 120


@dataclass(slots=True)
class BuildProgress:
    started_at: float  # wall clock: status.json carries it, and `nvirtd status` counts from it
    to_build: int | None = None
    to_fetch: int | None = None
    started: int = 0
    fetched: int = 0
    last_line: str = ""

    def feed(self, line: str) -> None:
        line = line.strip()
        if not line:
            return
        if match := _TO_BUILD.match(line):
            self.to_build = (self.to_build or 0) + int(match.group(1) or 1)
        elif match := _TO_FETCH.match(line):
            self.to_fetch = (self.to_fetch or 0) + int(match.group(1) or 1)
        elif _STARTED.match(line):
            self.started += 1
        elif _FETCHED.match(line):
            self.fetched += 1
        elif line.startswith("/nix/store/") and " " not in line:
            return  # the list of what will be built or fetched: no news
        self.last_line = _LOG_PREFIX.sub("", line)[-LAST_LINE_CHARS:]

    def as_json(self) -> dict[str, object]:
        return {"since": self.started_at, "to_build": self.to_build, "started": self.started,
                "to_fetch": self.to_fetch, "fetched": self.fetched, "last_line": self.last_line}


def describe(progress: dict, now: float) -> str:
    """e.g. "building 3 min, 12 of 415 derivations left: [the last line]", from as_json()."""
    parts = [f"building {_duration(now - progress.get('since', now))}"]
    to_build, to_fetch = progress.get("to_build"), progress.get("to_fetch")
    started = progress.get("started", 0)
    if to_build:
        parts.append(f"{max(to_build - started, 0)} of {to_build} derivations left")
    elif started:  # `nix build` does not say up front how many there are
        parts.append(f"{started} derivation{'s' if started != 1 else ''} started")
    if to_fetch and progress.get("fetched", 0) < to_fetch:
        parts.append(f"{to_fetch - progress.get('fetched', 0)} of {to_fetch} paths to fetch")
    text = ", ".join(parts)
    last = progress.get("last_line")
    return f"{text}: {last}" if last else text


def _duration(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"
