"""Build (or find in the cache) the wheel of bot_app and, optionally, an offline wheelhouse.

Runs on the Ansible controller with the controller's Python. The cache key is a hash of the
source files, so an unchanged source gives the same wheel file (the same release id on the hosts)
on every run, and a changed one a new wheel. Prints one JSON object:
{"changed": bool, "wheel": path, "constraints": path, "wheelhouse": path or "", "key": hash}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

# Files of bot_app/ that make up a release (tests, bench and build output do not).
SOURCE_FILES = ("pyproject.toml", "README.md", "constraints.txt")
SOURCE_DIRS = ("src",)
SKIP_PARTS = {"__pycache__", ".ruff_cache", ".pytest_cache"}
KEEP_CACHE_ENTRIES = 5
# Zip timestamps of the wheel (the cache key already identifies the source).
SOURCE_DATE_EPOCH = "315532800"


def source_paths(source: Path) -> list[Path]:
    paths = [source / name for name in SOURCE_FILES if (source / name).is_file()]
    for d in SOURCE_DIRS:
        for path in sorted((source / d).rglob("*")):
            rel = path.relative_to(source)
            if path.is_file() and not SKIP_PARTS.intersection(rel.parts) \
                    and not any(p.endswith(".egg-info") for p in rel.parts) and path.suffix != ".pyc":
                paths.append(path)
    return paths


def source_key(source: Path, extra: list[str]) -> str:
    digest = hashlib.sha256()
    for path in source_paths(source):
        digest.update(str(path.relative_to(source)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    digest.update(json.dumps(extra).encode())
    return digest.hexdigest()[:16]


def run(argv: list[str], what: str, env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise SystemExit(f"{what} failed (exit {proc.returncode}):\n{tail}")


def build(source: Path, out: Path, wheel: Path | None, wheelhouse: bool, extra: list[str],
          pip_args: list[str]) -> None:
    dist = out / "dist"
    dist.mkdir(parents=True)
    if wheel is None:
        # A clean copy: a build in place would pick up bot_app/build/ left by other builds.
        tree = out / "source"
        tree.mkdir()
        for path in source_paths(source):
            target = tree / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        env = dict(os.environ, SOURCE_DATE_EPOCH=SOURCE_DATE_EPOCH, PIP_DISABLE_PIP_VERSION_CHECK="1")
        run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(dist),
             *pip_args, str(tree)], "building the bot_app wheel (pip wheel)", env)
        shutil.rmtree(tree)
    else:
        shutil.copy2(wheel, dist / wheel.name)
    shutil.copy2(source / "constraints.txt", out / "constraints.txt")
    if wheelhouse:
        (wheel_file,) = dist.glob("*.whl")
        house = out / "wheelhouse"
        run([sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(house),
             "--constraint", str(out / "constraints.txt"), *pip_args, str(wheel_file), *extra],
            "building the wheelhouse (pip wheel of the dependencies)")
        with tarfile.open(out / "wheelhouse.tar", "w") as tar:
            for path in sorted(house.glob("*.whl")):
                info = tar.gettarinfo(str(path), arcname=path.name)
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                with path.open("rb") as fh:
                    tar.addfile(info, fh)
        shutil.rmtree(house)


def prune(cache: Path, keep: str) -> None:
    entries = sorted((p for p in cache.iterdir() if p.is_dir() and (p / ".done").exists()),
                     key=lambda p: (p / ".done").stat().st_mtime, reverse=True)
    for old in entries[KEEP_CACHE_ENTRIES:]:
        if old.name != keep:
            shutil.rmtree(old, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--source", required=True, type=Path, help="bot_app/ of the collection")
    ap.add_argument("--cache", required=True, type=Path)
    ap.add_argument("--wheel", type=Path, help="use this wheel instead of building one")
    ap.add_argument("--wheelhouse", action="store_true")
    ap.add_argument("--extra", action="append", default=[], help="extra requirement for the wheelhouse")
    ap.add_argument("--index-url", default="")
    args = ap.parse_args()

    source = args.source.resolve()
    if not (source / "pyproject.toml").is_file() or not (source / "constraints.txt").is_file():
        raise SystemExit(f"{source} is not bot_app's source (pyproject.toml and constraints.txt expected)")
    if args.wheel is not None and not args.wheel.is_file():
        raise SystemExit(f"bot_app_wheel {args.wheel} is not a file on the controller")
    pip_args = ["--index-url", args.index_url] if args.index_url else []
    extra = args.extra if args.wheelhouse else []
    salt = [args.wheelhouse, extra]
    if args.wheel is not None:
        salt.append(hashlib.sha256(args.wheel.read_bytes()).hexdigest())
    key = source_key(source, [json.dumps(salt)])
    out = args.cache / key
    changed = False
    if not (out / ".done").exists():
        args.cache.mkdir(parents=True, exist_ok=True, mode=0o755)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=args.cache))
        try:
            build(source, tmp, args.wheel, args.wheelhouse, extra, pip_args)
            (tmp / ".done").write_text(key + "\n")
            try:
                os.rename(tmp, out)
                changed = True
            except OSError:  # a parallel run finished the same build first: use that one
                if not (out / ".done").exists():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    (out / ".done").touch()
    prune(args.cache, key)
    (wheel,) = (out / "dist").glob("*.whl")
    print(json.dumps({"changed": changed, "key": key, "wheel": str(wheel),
                      "constraints": str(out / "constraints.txt"),
                      "wheelhouse": str(out / "wheelhouse.tar") if args.wheelhouse else ""}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
