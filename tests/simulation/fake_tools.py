"""qemu-img, nix-store and a NixOS image build, simulated, for nix disks in the simulation.

The daemon's real images adapter runs (its create-into-a-temporary-name, its
registry, its GC roots); only the subprocesses it starts are answered here, in
virtual time, on real files in the simulation's temporary folder: an "image" is a
small JSON file with its format, size, backing file and a unique id, and the nix
store is a directory the simulation's garbage collector sweeps. What qemu-img
reports for an overlay is held to the real qemu-img by tests/simulation/test_fake_tools.py.

Builds take virtual time and can fail, finish late or hang; creating an overlay can
fail half-way, leaving a partial temporary file, as a full disk would.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
from collections.abc import Callable
from pathlib import Path

from daemon.adapters.proc import Result
from daemon.errors import CommandError

BUILD = "sim-build"  # the build command's argv[0] in the simulation's settings


class FakeTools:
    def __init__(self, store: Path, roots: Path) -> None:
        self.store = store
        self.roots = roots  # the daemon's GC roots directory
        self.build_mode = "ok"  # ok | fail | late | hang
        self.create_fails = False  # the next qemu-img create fails half-way
        self._ids = itertools.count(1)
        self.created: list[tuple[str, int]] = []  # (overlay path it was created for, image id)
        self.in_use: Callable[[str], bool] = lambda path: False  # a running guest has it open (QEMU's lock)

    async def run(self, argv: list[str], *, env: dict[str, str] | None = None, cwd: str | None = None,
                  timeout: float | None = None, **fields: object) -> Result:
        work = self._dispatch(argv)
        return await asyncio.wait_for(work, timeout) if timeout is not None else await work

    async def _dispatch(self, argv: list[str]) -> Result:
        if argv[0] == BUILD:
            return await self._build(argv[1])
        if argv[:2] == ["qemu-img", "info"]:
            return Result(self._info(argv[-1]), "")
        if argv[:2] == ["qemu-img", "create"]:
            return self._create(argv)
        if argv[:2] == ["qemu-img", "resize"]:
            return self._resize(argv)
        if argv[0] == "nix-store" and "--add-root" in argv:
            store, link = argv[argv.index("--realise") + 1], argv[argv.index("--add-root") + 1]
            if not os.path.exists(store):
                raise CommandError(argv, 1, f"error: path '{store}' is not valid")
            tmp = f"{link}.tmp"
            os.symlink(store, tmp)
            os.replace(tmp, link)
            return Result(store + "\n", "")
        raise AssertionError(f"the simulation does not know this command: {argv}")

    # ---- nix ------------------------------------------------------------------------
    async def _build(self, config: str) -> Result:
        mode = self.build_mode
        await asyncio.sleep({"ok": 3.0, "fail": 1.0, "late": 150.0, "hang": 10**6}[mode])
        if mode == "fail":
            raise CommandError([BUILD, config], 1, "error: attribute 'nixos' missing\n")
        text = Path(config).read_text() if os.path.exists(config) else ""
        digest = hashlib.sha256(text.encode()).hexdigest()
        name = "".join("abcdfghijklmnpqrsvwxyz0123456789"[int(c, 16)] for c in digest[:32])
        out = self.store / f"{name}-nixos-disk-image"
        image = out / "nixos.qcow2"
        if not image.exists():
            out.mkdir(parents=True, exist_ok=True)
            self._write_image(image, size=2 * 2**30, backing=None)
        return Result(f"building...\n{out}\n", "")

    def collect_garbage(self) -> list[str]:
        """nix-collect-garbage: every store path no GC root points at is deleted."""
        rooted = {os.readlink(link) for link in self.roots.iterdir() if link.is_symlink()} \
            if self.roots.is_dir() else set()
        gone = []
        for path in sorted(self.store.iterdir()):
            if str(path) not in rooted:
                for f in path.iterdir():
                    f.unlink()
                path.rmdir()
                gone.append(str(path))
        return gone

    # ---- qemu-img -------------------------------------------------------------------
    def _write_image(self, path: Path, *, size: int, backing: str | None, fmt: str = "qcow2") -> int:
        image_id = next(self._ids)
        path.write_text(json.dumps({"format": fmt, "virtual-size": size, "backing": backing, "id": image_id}))
        return image_id

    def write_image(self, path: Path, *, size: int) -> None:
        """A base image of the administrator's, outside the store."""
        self._write_image(path, size=size, backing=None)

    @staticmethod
    def read(path: str) -> dict:
        return json.loads(Path(path).read_text())

    def _info(self, path: str) -> str:
        try:
            data = self.read(path)
        except (OSError, ValueError):
            raise CommandError(["qemu-img", "info", path], 1,
                               f"qemu-img: Could not open '{path}': Image is not in qcow2 format") from None
        info = {"format": data["format"], "virtual-size": data["virtual-size"], "actual-size": 200704,
                "filename": path}
        if data["backing"]:
            info |= {"backing-filename": data["backing"], "full-backing-filename": data["backing"],
                     "backing-filename-format": "qcow2"}
        return json.dumps(info)

    def _resize(self, argv: list[str]) -> Result:
        path, size = argv[-2], int(argv[-1])
        if self.in_use(path):
            raise CommandError(argv, 1, f'qemu-img: Could not open \'{path}\': Failed to get "write" lock\n'
                                        f"Is another process using the image [{path}]?")
        data = self.read(path)
        if size < data["virtual-size"] and "--shrink" not in argv:
            raise CommandError(argv, 1, "qemu-img: Use the --shrink option to perform a shrink operation.")
        self.sizes[path] = size
        return Result("", "")

    @property
    def sizes(self) -> ImageSizes:
        return ImageSizes(self)

    def _create(self, argv: list[str]) -> Result:
        backing = argv[argv.index("-b") + 1]
        target_at = argv.index("-b") + 2
        target = argv[target_at]
        size = int(argv[target_at + 1]) if len(argv) > target_at + 1 else None
        if not os.path.exists(backing):
            raise CommandError(argv, 1, f"qemu-img: {target}: Could not open '{backing}': No such file or directory\n"
                                        "Could not open backing image.")
        if self.create_fails:
            self.create_fails = False
            Path(target).write_text('{"format": "qcow2", "virt')  # half written
            raise CommandError(argv, 1, f"qemu-img: {target}: Could not write: No space left on device")
        base = self.read(backing)
        image_id = self._write_image(Path(target), size=size or base["virtual-size"], backing=backing)
        self.created.append((target, image_id))
        return Result("", "")


class ImageSizes:
    """The virtual sizes of the simulation's image files, as the fake hypervisor's
    `image_sizes` sees them: a live resize there shows in `qemu-img info` here."""

    def __init__(self, tools: FakeTools) -> None:
        self.tools = tools

    def __getitem__(self, path: str) -> int:
        return int(self.tools.read(path)["virtual-size"])

    def __setitem__(self, path: str, size: int) -> None:
        data = self.tools.read(path)
        data["virtual-size"] = size
        Path(path).write_text(json.dumps(data))
