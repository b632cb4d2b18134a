# Copyright: clawbot.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Releases of bot_app side by side under one root directory (the bot_release module's rules).

No AnsibleModule in here, so every rule can be unit tested without running commands. Layout::

    <root>/.lock                       exclusive flock held by every run that changes something
    <root>/releases.json               history (version 1): when each release was installed / made current
    <root>/current -> releases/<id>    the live release (relative symlink, replaced by rename(2))
    <root>/previous -> releases/<id>   the release that was live before it (the rollback target)
    <root>/releases/<id>/venv/         the virtualenv, built at this very path (its scripts embed it)
    <root>/releases/<id>/.complete     written last (JSON): a release without it is incomplete
    <root>/releases/.partial-*         a directory being deleted: never a release, removed by the next run

``<id>`` is ``<version>-<digest>``: the version from the wheel's file name and the first 12 hex digits
of the SHA-256 of the wheel's bytes followed by the constraints file's bytes (when there is one).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import tempfile
import zipfile
from datetime import datetime, timezone

from ansible_collections.clawbot.stack.plugins.module_utils.filelock import FileLock

UTC = timezone.utc  # noqa: UP017 - module_utils run on Python 3.8+, datetime.UTC is 3.11+

DISTRIBUTION = "clawbot_app"
EXECUTABLE = "clawbot-app"
RELEASES_DIR = "releases"
VENV_DIR = "venv"
MARKER = ".complete"
HISTORY = "releases.json"
LOCK = ".lock"
CURRENT = "current"
PREVIOUS = "previous"
PARTIAL_PREFIX = ".partial-"
LINK_TEMP_PREFIXES = (".current-", ".previous-")
HISTORY_TEMP_PREFIX = ".releases.json."
HISTORY_VERSION = 1
DIGEST_LENGTH = 12
MAX_METADATA_BYTES = 1024 * 1024
MAX_HISTORY_BYTES = 4 * 1024 * 1024
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
OUTPUT_TAIL_LINES = 15

# A normalized PEP 440 version, as wheel builders write it into file names.
VERSION_RE = re.compile(
    r"^(?:[0-9]+!)?[0-9]+(?:\.[0-9]+)*(?:(?:a|b|rc)[0-9]+)?(?:\.post[0-9]+)?(?:\.dev[0-9]+)?"
    r"(?:\+[a-z0-9]+(?:\.[a-z0-9]+)*)?$")
RELEASE_ID_RE = re.compile(r"^(?P<version>[0-9][0-9a-z.!+]*)-(?P<digest>[0-9a-f]{" + str(DIGEST_LENGTH) + r"})$")
URL_CREDENTIALS_RE = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@")
NO_SPACE_RE = re.compile(r"No space left on device|\[Errno 28\]|ENOSPC")
PIP_REQUIREMENT_RES = (
    re.compile(r"No matching distribution found for (\S+)"),
    re.compile(r"Could not find a version that satisfies the requirement (\S+)"),
)


class ReleaseError(Exception):
    """A problem that stops the run; the message names the option or path it is about."""


# --- text -------------------------------------------------------------------------------------

def utcnow_text():
    return datetime.now(UTC).strftime(TIME_FORMAT)


def redact(text):
    """``text`` without the ``user:password@`` part of any URL in it (index, proxy credentials)."""
    if text is None:
        return None
    return URL_CREDENTIALS_RE.sub(r"\1", text)


def tail(text, lines=OUTPUT_TAIL_LINES):
    """The last ``lines`` non-empty lines of ``text``, redacted."""
    kept = [line.rstrip() for line in (text or "").splitlines() if line.strip()]
    return redact("\n".join(kept[-lines:]))


def is_no_space(text):
    return bool(NO_SPACE_RE.search(text or ""))


def no_space_message(root):
    return f"no space left on device under {root}"


def pip_problem(output):
    """A short reason for a failed ``pip install`` (naming the package when pip did), or None."""
    text = output or ""
    for pattern in PIP_REQUIREMENT_RES:
        match = pattern.search(text)
        if match:
            return f"no matching distribution found for {match.group(1)}"
    if "conflicting dependencies" in text or "ResolutionImpossible" in text:
        causes = []
        lines = text.splitlines()
        for index, line in enumerate(lines):
            if line.strip() == "The conflict is caused by:":
                for cause in lines[index + 1:]:
                    if not cause.startswith((" ", "\t")) or not cause.strip():
                        break
                    causes.append(cause.strip())
                break
        return "conflicting dependencies" + (f" ({'; '.join(causes)})" if causes else "")
    match = re.search(r"ERROR: (Could not install packages due to an OSError.*)", text)
    if match:
        return match.group(1).strip()
    return None


def version_printed(output, version):
    """Whether ``clawbot-app --version`` printed ``version`` (as a word of its output)."""
    return version in (output or "").split()


# --- the artifact -----------------------------------------------------------------------------

def normalize_name(name):
    return re.sub(r"[-_.]+", "_", name).lower()


def parse_wheel_filename(path):
    """``(distribution, version)`` from a wheel's file name (PEP 427), for bot_app only."""
    filename = os.path.basename(path)
    if not filename.endswith(".whl"):
        raise ReleaseError(f"wheel: {path} is not a wheel (the file name must end with .whl)")
    parts = filename[:-len(".whl")].split("-")
    if len(parts) not in (5, 6) or not all(parts):
        raise ReleaseError(f"wheel: {filename} is not a valid wheel file name "
                           "(expected name-version[-build]-python-abi-platform.whl, PEP 427)")
    name, version = parts[0], parts[1]
    if len(parts) == 6 and not parts[2][:1].isdigit():
        raise ReleaseError(f"wheel: {filename} has an invalid build tag {parts[2]!r} (must start with a digit)")
    if normalize_name(name) != DISTRIBUTION:
        raise ReleaseError(f"wheel: {filename} is a wheel of {name!r}, not of {DISTRIBUTION}")
    if not VERSION_RE.match(version):
        raise ReleaseError(f"wheel: {filename} has the version {version!r}, which is not a normalized "
                           "PEP 440 version (like 1.2.0, 1.2.0rc1, 1.2.0.post1, 1.2.0+local)")
    return name, version


def check_wheel_archive(path, version):
    """The wheel is a zip archive with a ``.dist-info/METADATA`` that states the same version."""
    try:
        if not zipfile.is_zipfile(path):
            raise ReleaseError(f"wheel: {path} is not a wheel (not a zip archive)")
        with zipfile.ZipFile(path) as archive:
            metadata = [name for name in archive.namelist()
                        if name.count("/") == 1 and name.endswith(".dist-info/METADATA")]
            if len(metadata) != 1:
                raise ReleaseError(f"wheel: {path} is not a wheel (no single *.dist-info/METADATA in it)")
            info = archive.getinfo(metadata[0])
            if info.file_size > MAX_METADATA_BYTES:
                raise ReleaseError(f"wheel: {path} has an oversized {metadata[0]}")
            text = archive.read(metadata[0]).decode("utf-8", "replace")
    except (OSError, zipfile.BadZipFile) as exc:
        raise ReleaseError(f"wheel: cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    found = None
    for line in text.splitlines():
        if not line.strip():
            break  # end of the headers
        if line.lower().startswith("version:"):
            found = line.split(":", 1)[1].strip()
            break
    if found != version:
        raise ReleaseError(f"wheel: {path} says version {version} in its file name but {found!r} in its METADATA")


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def artifact_digest(wheel, constraints=None):
    """SHA-256 (hex) of the wheel's bytes followed by the constraints file's bytes."""
    digest = hashlib.sha256()
    for path in (wheel, constraints):
        if path is None:
            continue
        with open(path, "rb") as handle:
            for chunk in iter(lambda handle=handle: handle.read(1024 * 1024), b""):
                digest.update(chunk)
    return digest.hexdigest()


def make_release_id(version, digest):
    return f"{version}-{digest[:DIGEST_LENGTH]}"


def version_of(release_id):
    match = RELEASE_ID_RE.match(release_id or "")
    return match.group("version") if match else None


# --- the layout -------------------------------------------------------------------------------

class Layout:
    def __init__(self, root):
        self.root = root
        self.releases = os.path.join(root, RELEASES_DIR)
        self.current = os.path.join(root, CURRENT)
        self.previous = os.path.join(root, PREVIOUS)
        self.history = os.path.join(root, HISTORY)
        self.lock = os.path.join(root, LOCK)

    def release(self, release_id):
        return os.path.join(self.releases, release_id)

    def venv(self, release_id):
        return os.path.join(self.releases, release_id, VENV_DIR)

    def marker(self, release_id):
        return os.path.join(self.releases, release_id, MARKER)

    def executable(self, release_id):
        return os.path.join(self.releases, release_id, VENV_DIR, "bin", EXECUTABLE)


class Link:
    """What ``current`` or ``previous`` is: missing, a link to a release, or a link elsewhere."""

    def __init__(self, path, target=None, release_id=None):
        self.path = path
        self.target = target
        self.release_id = release_id

    @property
    def exists(self):
        return self.target is not None


def read_link(path, releases_dir):
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return Link(path)
    if not stat.S_ISLNK(info.st_mode):
        raise ReleaseError(f"{path} is not a symbolic link; move it away (the module manages it as a link to "
                           f"a release under {releases_dir})")
    target = os.readlink(path)
    resolved = os.path.normpath(os.path.join(os.path.dirname(path), target))
    release_id = None
    if os.path.dirname(resolved) == os.path.normpath(releases_dir):
        name = os.path.basename(resolved)
        if RELEASE_ID_RE.match(name):
            release_id = name
    return Link(path, target, release_id)


def read_marker(path):
    """The marker's content (a dict) or None when it is missing or not what this module writes."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_METADATA_BYTES)
        doc = json.loads(data.decode("utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


class Scan:
    """The releases directory as it is: complete and incomplete releases, leftovers, the two links."""

    def __init__(self, layout):
        self.layout = layout
        self.root_exists = False
        self.complete = {}       # id -> marker dict
        self.marker_mtime = {}   # id -> float
        self.incomplete = {}     # id -> why
        self.leftovers = []      # paths of .partial-* entries and temporary links/files
        self.current = Link(layout.current)
        self.previous = Link(layout.previous)

    def is_complete(self, release_id):
        return release_id is not None and release_id in self.complete


def scan(layout):
    """Read (never change) the state under ``layout.root``."""
    result = Scan(layout)
    if not os.path.lexists(layout.root):
        return result
    if not os.path.isdir(layout.root):
        raise ReleaseError(f"root: {layout.root} exists and is not a directory")
    result.root_exists = True
    result.current = read_link(layout.current, layout.releases)
    result.previous = read_link(layout.previous, layout.releases)
    for name in sorted(os.listdir(layout.root)):
        if name.startswith(LINK_TEMP_PREFIXES) or (name.startswith(HISTORY_TEMP_PREFIX) and name.endswith(".tmp")):
            result.leftovers.append(os.path.join(layout.root, name))
    if not os.path.lexists(layout.releases):
        return result
    if os.path.islink(layout.releases) or not os.path.isdir(layout.releases):
        raise ReleaseError(f"{layout.releases} exists and is not a directory")
    for name in sorted(os.listdir(layout.releases)):
        path = os.path.join(layout.releases, name)
        if name.startswith(PARTIAL_PREFIX):
            result.leftovers.append(path)
            continue
        if not RELEASE_ID_RE.match(name):
            continue  # not ours: left alone
        _classify_release(result, layout, name, path)
    return result


def _classify_release(result, layout, name, path):
    if os.path.islink(path) or not os.path.isdir(path):
        result.incomplete[name] = "not a directory"
        return
    marker = read_marker(layout.marker(name))
    if marker is None or marker.get("release_id") != name:
        result.incomplete[name] = f"no valid {MARKER} marker (an interrupted install)"
        return
    python = marker.get("python")
    if isinstance(python, str) and python and not os.path.exists(python):
        result.incomplete[name] = f"its interpreter {python} no longer exists"
        return
    if not os.path.isfile(layout.executable(name)):
        result.incomplete[name] = f"{VENV_DIR}/bin/{EXECUTABLE} is missing"
        return
    result.complete[name] = marker
    with contextlib.suppress(OSError):
        result.marker_mtime[name] = os.stat(layout.marker(name)).st_mtime


# --- history ----------------------------------------------------------------------------------

def load_history(path):
    """``(entries, sequence, problem)``: entries map id -> {version, installed, activated, seq}.

    A missing file is an empty history; an unreadable or malformed one too, with ``problem`` saying why
    (the caller warns; the file is rewritten on the next change).
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_HISTORY_BYTES + 1)
    except FileNotFoundError:
        return {}, 0, None
    except OSError as exc:
        return {}, 0, f"cannot read {path}: {exc.strerror}"
    try:
        doc = json.loads(data.decode("utf-8"))
        if not isinstance(doc, dict) or doc.get("version") != HISTORY_VERSION:
            raise ValueError("unsupported format")
        raw = doc.get("releases")
        sequence = doc.get("sequence", 0)
        if not isinstance(raw, dict) or not isinstance(sequence, int):
            raise ValueError("unsupported format")
        entries = {}
        for release_id, entry in raw.items():
            if RELEASE_ID_RE.match(release_id) and isinstance(entry, dict) and isinstance(entry.get("seq", 0), int):
                entries[release_id] = dict(entry)
    except (ValueError, UnicodeDecodeError):
        return {}, 0, f"{path} is not a valid history file; it is rebuilt from the release directories"
    return entries, max([sequence] + [entry.get("seq", 0) for entry in entries.values()]), None


def history_document(entries, sequence):
    return {"version": HISTORY_VERSION, "sequence": sequence,
            "releases": {release_id: entries[release_id] for release_id in sorted(entries)}}


def newest_first(release_ids, entries, fallback_times=None):
    """``release_ids`` ordered by when they were last made current or installed, newest first.

    The history's sequence numbers decide; releases it does not know (a lost history file, a release
    installed by hand) come after those it knows, by the time their marker was written.
    """
    fallback_times = fallback_times or {}

    def key(release_id):
        entry = entries.get(release_id) or {}
        return (entry.get("seq", 0), fallback_times.get(release_id, 0.0), release_id)

    return sorted(release_ids, key=key, reverse=True)


def plan_prune(ordered, keep, protected):
    """The ids of ``ordered`` (newest first) beyond ``keep``, never one of ``protected``; oldest last."""
    protected = {release_id for release_id in protected if release_id is not None}
    kept = [release_id for release_id in ordered if release_id in protected]
    for release_id in ordered:
        if release_id not in protected and len(kept) < keep:
            kept.append(release_id)
    return [release_id for release_id in ordered if release_id not in kept]


# --- plans ------------------------------------------------------------------------------------

class Plan:
    """What a run does (or, in check mode, would do)."""

    def __init__(self):
        self.release_id = None
        self.remove = []          # paths of leftovers and incomplete releases to delete first
        self.install = False
        self.switch = False
        self.rollback = False
        self.current = None       # ids after the run
        self.previous = None
        self.prune = []
        self.releases = []        # ids remaining after the run, newest first
        self.entries = {}         # history after the run
        self.sequence = 0

    @property
    def changed(self):
        return bool(self.remove or self.install or self.switch or self.prune)


def _removals(state, keep_ids):
    """Leftovers plus incomplete releases, except the targets of the links (unless rebuilt)."""
    remove = list(state.leftovers)
    for release_id in sorted(state.incomplete):
        if release_id in keep_ids:
            continue
        remove.append(state.layout.release(release_id))
    return remove


def _finish(plan, state, entries, sequence, keep, now):
    """Order, prune and the history after the run."""
    complete = set(state.complete)
    if plan.install:
        complete.add(plan.release_id)
    entries = {release_id: dict(entry) for release_id, entry in entries.items() if release_id in complete}
    if plan.install or plan.switch:
        sequence += 1
        entry = entries.setdefault(plan.current, {"version": version_of(plan.current), "installed": None})
        if plan.install:
            entry["installed"] = now
        entry.update(activated=now, seq=sequence)
    ordered = newest_first(sorted(complete), entries, state.marker_mtime)
    plan.prune = plan_prune(ordered, keep, (plan.current, plan.previous))
    plan.releases = [release_id for release_id in ordered if release_id not in plan.prune]
    for release_id in plan.prune:
        entries.pop(release_id, None)
    plan.entries, plan.sequence = entries, sequence
    return plan


def plan_present(state, release_id, keep, entries, sequence, now):
    """Install ``release_id`` when it is not complete, make it current, prune.

    ``previous`` is only rewritten when ``current`` changes: it becomes the old current when that was a
    complete release, else it stays (or goes, when it would name the new current or an unusable release).
    """
    plan = Plan()
    plan.release_id = plan.current = release_id
    old_current = state.current.release_id
    old_previous = state.previous.release_id
    plan.install = not state.is_complete(release_id)
    plan.remove = _removals(state, {old_current, old_previous} - {release_id})
    plan.switch = old_current != release_id
    plan.previous = old_previous
    if plan.switch:
        if state.is_complete(old_current):
            plan.previous = old_current
        elif old_previous == release_id or not state.is_complete(old_previous):
            plan.previous = None
    return _finish(plan, state, entries, sequence, keep, now)


def plan_rollback(state, keep, entries, sequence, now):
    """Make ``previous`` current and ``current`` previous; errors when there is nothing to go back to."""
    current, previous = state.current, state.previous
    root = state.layout.root
    if not current.exists or current.release_id is None:
        raise ReleaseError(f"cannot roll back: {state.layout.current} does not point to a release under "
                           f"{state.layout.releases}" + (f" (it points to {current.target})" if current.exists else ""))
    if not previous.exists:
        raise ReleaseError(f"cannot roll back: there is no previous release under {root} "
                           f"({state.layout.previous} does not exist); current is {current.release_id}")
    if previous.release_id is None:
        raise ReleaseError(f"cannot roll back: {state.layout.previous} points to {previous.target}, "
                           "which is not a release of this module")
    if previous.release_id == current.release_id:
        raise ReleaseError(f"cannot roll back: previous and current are both {current.release_id}")
    if not state.is_complete(previous.release_id):
        why = state.incomplete.get(previous.release_id, "its directory does not exist")
        raise ReleaseError(f"cannot roll back: the previous release {previous.release_id} is unusable: {why}")
    plan = Plan()
    plan.release_id = previous.release_id
    plan.rollback = plan.switch = True
    plan.remove = _removals(state, {current.release_id, previous.release_id})
    plan.current = previous.release_id
    plan.previous = current.release_id if state.is_complete(current.release_id) else None
    return _finish(plan, state, entries, sequence, keep, now)


def diff_text(current, previous, releases):
    return (f"current: {current or '(none)'}\n"
            f"previous: {previous or '(none)'}\n"
            f"releases: {', '.join(releases) if releases else '(none)'}\n")


# --- files ------------------------------------------------------------------------------------

class Lock(FileLock):
    """flock on ``path``: exclusive (creating the file) or, for check mode, shared when it exists."""

    error = ReleaseError
    holder = "another run (another play on this host)"

    def __init__(self, path, timeout=300.0, shared=False, poll=0.2):
        super().__init__(path, timeout, poll, shared=shared)


def fsync_directory(directory):
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_filesystem(path):
    """Flush the file system holding ``path`` (syncfs(2) where ctypes finds it, else sync(2))."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        syncfs = libc.syncfs
    except (OSError, AttributeError):
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        if syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def ensure_directory(path, uid, gid, mode=0o755):
    """Create ``path`` (one level) with owner and mode; True when it was created."""
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        if not os.path.isdir(path):
            raise ReleaseError(f"{path} exists and is not a directory") from None
        return False
    os.chmod(path, mode)  # mkdir applies the umask
    os.chown(path, uid, gid)
    fsync_directory(os.path.dirname(path) or ".")
    return True


def atomic_write(path, data, uid, gid, mode=0o644):
    directory = os.path.dirname(path)
    fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            os.fchown(handle.fileno(), uid, gid)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
        temp = None
    finally:
        if temp is not None:
            with contextlib.suppress(OSError):
                os.unlink(temp)
    fsync_directory(directory)


def json_bytes(doc):
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8")


def write_marker(layout, release_id, info, uid, gid):
    atomic_write(layout.marker(release_id), json_bytes(dict(info, release_id=release_id)), uid, gid)


def write_history(layout, entries, sequence, uid, gid):
    atomic_write(layout.history, json_bytes(history_document(entries, sequence)), uid, gid)


def replace_link(path, target, uid, gid):
    """Point the symlink ``path`` at ``target``: a new link next to it renamed over it, directory fsynced."""
    directory, name = os.path.split(path)
    temp = os.path.join(directory, f".{name}-{secrets.token_hex(6)}")
    os.symlink(target, temp)
    try:
        os.lchown(temp, uid, gid)
        os.rename(temp, path)
        temp = None
    finally:
        if temp is not None:
            with contextlib.suppress(OSError):
                os.unlink(temp)
    fsync_directory(directory)


def remove_link(path):
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    fsync_directory(os.path.dirname(path))


def release_link_target(release_id):
    return f"{RELEASES_DIR}/{release_id}"


def discard(path):
    """Delete a release directory or leftover so no half-deleted tree can pass for a release.

    A release is renamed to ``.partial-<id>-<random>`` first (atomic: it stops being a release at
    once), then deleted; a deletion that is interrupted leaves only a ``.partial-*`` directory, which
    the next run removes.
    """
    directory, name = os.path.split(path)
    if not name.startswith((PARTIAL_PREFIX, *LINK_TEMP_PREFIXES, HISTORY_TEMP_PREFIX)):
        doomed = os.path.join(directory, f"{PARTIAL_PREFIX}{name}-{secrets.token_hex(4)}")
        os.rename(path, doomed)
        fsync_directory(directory)
        path = doomed
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def settle_tree(path, uid, gid):
    """Owner ``uid``/``gid`` for everything under ``path``; no group or other write permission."""
    def fix(entry):
        info = os.lstat(entry)
        if (info.st_uid, info.st_gid) != (uid, gid):
            os.lchown(entry, uid, gid)
        if not stat.S_ISLNK(info.st_mode) and info.st_mode & 0o022:
            os.chmod(entry, stat.S_IMODE(info.st_mode) & ~0o022)

    fix(path)
    for directory, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            fix(os.path.join(directory, name))


# --- pip ------------------------------------------------------------------------------------

def pip_install_argv(venv_python, wheel, constraints=None, wheelhouse=None, index_url=None, extra_index_urls=(),
                     ca_bundle=None, proxy=None):
    argv = [venv_python, "-m", "pip", "install", "--no-input", "--disable-pip-version-check",
            "--progress-bar", "off"]
    if wheelhouse:
        argv += ["--no-index", "--find-links", wheelhouse]
    else:
        if index_url:
            argv += ["--index-url", index_url]
        for url in extra_index_urls or ():
            argv += ["--extra-index-url", url]
    if ca_bundle:
        argv += ["--cert", ca_bundle]
    if proxy:
        argv += ["--proxy", proxy]
    if constraints:
        argv += ["--constraint", constraints]
    argv.append(wheel)
    return argv
