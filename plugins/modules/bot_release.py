#!/usr/bin/python
# Copyright: clawbot.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: bot_release
short_description: Install releases of the bot service (bot_app) side by side and switch between them atomically
version_added: 0.1.0
description:
  - Installs a wheel of the bot service (C(clawbot_app)) that is already on the host into a virtualenv of its
    own, C(<root>/releases/<id>/venv), checks it (smoke test), then makes it the live release by pointing the
    symbolic link C(<root>/current) at it. The release that was live before stays as C(<root>/previous),
    the target of O(state=rollback).
  - 'The release id is C(<version>-<digest>): the version from the wheel''s file name and the first 12 hex
    digits of the SHA-256 of the wheel''s bytes followed by the bytes of the O(constraints) file (when given).
    Without O(constraints) the digest is the start of the wheel''s C(sha256sum). A wheel or pinned
    dependencies that change make a new release; the package source (O(index_url), O(wheelhouse)) does not.'
  - 'Where the virtualenv is built: at its final path. A virtualenv cannot be moved (its scripts, such as
    C(bin/clawbot-app), start with the absolute path of its interpreter), so it is not built elsewhere and
    renamed. Instead the file C(<root>/releases/<id>/.complete) is written last, after pip, the smoke test and
    a flush of the file system; a release directory without it is incomplete (an interrupted run) and is
    deleted and rebuilt. Directories are deleted by renaming them to C(<root>/releases/.partial-<id>-<random>)
    first, so a half-deleted tree never looks like a release; C(.partial-*) directories left by an interrupted
    run are removed by the next run and reported in RV(removed_partial).'
  - 'Smoke test, before C(current) changes (also when switching to a release that already exists or rolling
    back): C(<venv>/bin/clawbot-app --version) must print the release''s version and, when O(config) exists,
    C(<venv>/bin/clawbot-app config check --config <config>) must pass (as O(smoke_user) when given).'
  - 'Switching: a new symbolic link C(<root>/.current-<random>) with the relative target C(releases/<id>) is
    renamed over C(<root>/current), then the directory is fsynced. The rename is the only moment C(current)
    changes, so it always names a complete release. C(<root>/previous) is switched the same way, before
    C(current) when deploying and after it when rolling back - after a crash between the two renames
    C(previous) is either right or the same as C(current), never another release, and a rollback that was
    asked for has happened.'
  - 'History: C(<root>/releases.json) (written atomically) records when each release was installed and last
    made current, with a sequence number. Pruning (O(keep_releases)) and RV(releases) order releases by it;
    releases it does not know (a lost history) count as older, in the order their C(.complete) files were
    written. A history file that cannot be read is rebuilt, with a warning.'
  - Every run that changes something holds an exclusive C(flock) on C(<root>/.lock) from start to end, so
    two plays on one host wait for each other instead of racing. Check mode takes a shared lock when the
    lock file exists.
  - Release directories belong to O(owner)/O(group) and nothing in them is writable by group or others.
author:
  - clawbot.stack contributors (@clawbot)
requirements:
  - A POSIX system (C(fcntl.flock)); the interpreter given as O(python) with its C(venv) module
    (Debian and Ubuntu - the C(python3-venv) package).
  - C(setpriv) or C(runuser) (util-linux) when O(smoke_user) is not the user the module runs as.
attributes:
  check_mode:
    support: full
    description: Can run in check_mode and return changed status prediction without modifying target.
    details:
      - Reads the wheel and the constraints to compute the release id, then reports what would be removed,
        installed, switched and pruned. Nothing is run (no pip, no smoke test) and nothing is written.
  diff_mode:
    support: full
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    details:
      - The diff shows the current and previous release ids and the releases kept, before and after.
  idempotent:
    support: partial
    description: When run twice in a row with the same arguments, the second run reports no change.
    details:
      - O(state=present) is idempotent. O(state=rollback) is not - each run swaps current and previous.
  platform:
    support: full
    platforms: posix
    description: Target OS/families that can be operated against.
options:
  root:
    description:
      - Directory of the releases, for example V(/opt/clawbot). Created (mode V(0755), O(owner)/O(group))
        when missing with O(state=present).
    type: path
    required: true
  state:
    description:
      - V(present) installs the release of O(wheel) unless it exists complete, and makes it current. When it
        is already current nothing happens (no pip run, C(changed=false)).
      - V(rollback) makes the previous release current again and the current one previous. It fails, leaving
        everything as it is, when there is no previous release or it is incomplete or missing.
    type: str
    choices: [present, rollback]
    default: present
  wheel:
    description:
      - Path on the host of the wheel of C(clawbot_app) to deploy. Required with O(state=present), ignored
        with O(state=rollback).
      - Its file name must follow the wheel naming convention (PEP 427,
        C(clawbot_app-<version>-<python>-<abi>-<platform>.whl)) with a normalized PEP 440 version, which must
        match the version in the wheel's metadata.
    type: path
  constraints:
    description:
      - Path on the host of a pip constraints file pinning the dependencies (passed as C(--constraint)).
      - Part of the release id, so that new pins make a new release.
    type: path
  python:
    description:
      - Interpreter that creates the virtualenv (C(<python> -m venv)).
    type: path
    default: /usr/bin/python3
  index_url:
    description:
      - Base URL of the package index (pip C(--index-url)). When neither this nor O(wheelhouse) is set, pip
        uses the index configured on the host (C(pip.conf), C(PIP_INDEX_URL)) or PyPI.
      - Credentials in the URL (C(https://user:token@host/simple)) are removed from every message and from the
        module's invocation in the results; a netrc file or the host's pip configuration keeps them out of the
        task arguments altogether.
      - Mutually exclusive with O(wheelhouse).
    type: str
  extra_index_urls:
    description:
      - More package indexes (pip C(--extra-index-url)), same credential handling as O(index_url).
      - Not allowed together with O(wheelhouse).
    type: list
    elements: str
    default: []
  ca_bundle:
    description:
      - PEM file on the host of the CA certificates that pip trusts for the index (pip C(--cert)).
    type: path
  proxy:
    description:
      - Proxy for pip, C(scheme://[user:password@]host:port) (pip C(--proxy)). Credentials are removed from
        messages like those of O(index_url).
    type: str
  wheelhouse:
    description:
      - Directory on the host with every wheel the release needs; pip installs offline from it
        (C(--no-index --find-links <wheelhouse>)).
      - Mutually exclusive with O(index_url).
    type: path
  config:
    description:
      - Path of the live configuration file of the bot, for example V(/etc/clawbot/config.yaml). When the file
        exists, the smoke test runs C(clawbot-app config check --config <config>) with the new release and
        refuses to switch to a release that rejects it. A missing file skips this check (first deployment).
    type: path
  smoke_user:
    description:
      - User (name or uid) that runs the configuration check of the smoke test, normally the service user, so
        the check also proves that the service can read its configuration and key files.
      - Privileges are dropped with C(setpriv --reuid --regid --init-groups) (or C(runuser -u) when setpriv is
        missing), which needs root. C(HOME), C(USER) and C(LOGNAME) are set for that user.
      - When not set, the check runs as the user the module runs as.
    type: str
  keep_releases:
    description:
      - How many complete releases to keep, at least V(2). After the run the oldest releases beyond this
        number are deleted; the current and the previous release are never deleted.
    type: int
    default: 3
  owner:
    description:
      - Owner (name or uid) of the release directories, the links, the history file and of O(root) when it
        is created.
    type: str
    default: root
  group:
    description:
      - Group (name or gid) of the release directories, the links, the history file and of O(root) when it
        is created.
    type: str
    default: root
  lock_timeout:
    description:
      - Seconds to wait for another run on the same O(root) to finish (C(<root>/.lock)) before failing.
    type: int
    default: 300
notes:
  - A failure (a bad wheel, pip, no space left, the virtualenv, the smoke test) leaves C(current) and
    C(previous) as they were and removes the release directory it was building.
  - Error messages carry the last lines of pip's or the failing command's output; URLs in them lose their
    credentials. The configuration check prints only paths and reasons, never secrets.
  - Releases are not modified once complete; O(owner)/O(group) apply to releases installed from then on.
seealso:
  - name: Binary distribution format (wheel file names)
    description: The wheel file name convention the version is taken from.
    link: https://packaging.python.org/en/latest/specifications/binary-distribution-format/
  - name: pip constraints files
    description: How the constraints file pins dependencies.
    link: https://pip.pypa.io/en/stable/user_guide/#constraints-files
"""

EXAMPLES = r"""
- name: Install the release and make it current (dependencies from the configured index)
  clawbot.stack.bot_release:
    root: /opt/clawbot
    wheel: /opt/clawbot/dist/clawbot_app-0.2.0-py3-none-any.whl
    constraints: /opt/clawbot/dist/constraints.txt
    config: /etc/clawbot/config.yaml
    smoke_user: clawbot
  register: release
  notify: Restart clawbot

- name: Air-gapped host - install offline from a wheelhouse, keep five releases
  clawbot.stack.bot_release:
    root: /opt/clawbot
    wheel: /opt/clawbot/dist/clawbot_app-0.2.0-py3-none-any.whl
    constraints: /opt/clawbot/dist/constraints.txt
    wheelhouse: /opt/clawbot/wheelhouse/0.2.0
    keep_releases: 5

- name: Private index behind a TLS-inspecting proxy
  clawbot.stack.bot_release:
    root: /opt/clawbot
    wheel: /opt/clawbot/dist/clawbot_app-0.2.0-py3-none-any.whl
    index_url: https://pypi.internal.example/simple
    ca_bundle: /usr/local/share/ca-certificates/corp-root.crt
    proxy: http://proxy.internal.example:3128

- name: Go back to the release that was live before
  clawbot.stack.bot_release:
    root: /opt/clawbot
    state: rollback
    config: /etc/clawbot/config.yaml
  notify: Restart clawbot
"""

RETURN = r"""
release_id:
  description:
    - Id of the release this run is about - the one of O(wheel), or with O(state=rollback) the one rolled back to.
  returned: always
  type: str
  sample: 0.2.0-3f1c2b7e9a0d
release_path:
  description: Directory of that release.
  returned: always
  type: str
  sample: /opt/clawbot/releases/0.2.0-3f1c2b7e9a0d
venv_path:
  description: Its virtualenv (C(bin/clawbot-app) is in there).
  returned: always
  type: str
  sample: /opt/clawbot/releases/0.2.0-3f1c2b7e9a0d/venv
version:
  description: Version of that release.
  returned: always
  type: str
  sample: 0.2.0
current_release_id:
  description: Id of the release C(<root>/current) points to after the run (in check mode - would point to).
  returned: always
  type: str
  sample: 0.2.0-3f1c2b7e9a0d
previous_release_id:
  description:
    - Id of the release C(<root>/previous) points to after the run (in check mode - would point to),
      V(null) when there is none.
  returned: always
  type: str
  sample: 0.1.0-77aa01bc22d3
installed:
  description: Whether the release was (in check mode - would be) installed by this run.
  returned: always
  type: bool
  sample: true
switched:
  description: Whether C(current) was (in check mode - would be) switched by this run.
  returned: always
  type: bool
  sample: true
config_checked:
  description:
    - Whether the smoke test ran C(clawbot-app config check) on O(config) in this run (never in check mode).
  returned: always
  type: bool
  sample: true
pruned:
  description: Ids of the releases deleted (in check mode - that would be deleted) because of O(keep_releases).
  returned: always
  type: list
  elements: str
  sample: [0.0.9-0c3d4e5f6a7b]
releases:
  description: Ids of the complete releases after the run, most recently installed or made current first.
  returned: always
  type: list
  elements: str
  sample: [0.2.0-3f1c2b7e9a0d, 0.1.0-77aa01bc22d3]
removed_partial:
  description:
    - Paths removed (in check mode - that would be removed) before anything else - C(.partial-*)
      directories and release directories without their C(.complete) file left by interrupted runs, and
      temporary links of an interrupted switch.
  returned: always
  type: list
  elements: str
  sample: [/opt/clawbot/releases/.partial-0.2.0-3f1c2b7e9a0d-5e6f7a8b]
"""

import errno  # noqa: E402 - Ansible modules import below their documentation
import grp  # noqa: E402
import os  # noqa: E402
import pwd  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.clawbot.stack.plugins.module_utils.release import (  # noqa: E402
    EXECUTABLE,
    Layout,
    Lock,
    ReleaseError,
    artifact_digest,
    check_wheel_archive,
    diff_text,
    discard,
    ensure_directory,
    file_sha256,
    is_no_space,
    load_history,
    make_release_id,
    newest_first,
    no_space_message,
    parse_wheel_filename,
    pip_install_argv,
    pip_problem,
    plan_present,
    plan_rollback,
    redact,
    release_link_target,
    remove_link,
    replace_link,
    scan,
    settle_tree,
    sync_filesystem,
    tail,
    utcnow_text,
    version_printed,
    write_history,
    write_marker,
)


def argument_spec():
    return dict(
        root=dict(type="path", required=True),
        state=dict(type="str", choices=["present", "rollback"], default="present"),
        wheel=dict(type="path"),
        constraints=dict(type="path"),
        python=dict(type="path", default="/usr/bin/python3"),
        index_url=dict(type="str"),
        extra_index_urls=dict(type="list", elements="str", default=[]),
        ca_bundle=dict(type="path"),
        proxy=dict(type="str"),
        wheelhouse=dict(type="path"),
        config=dict(type="path"),
        smoke_user=dict(type="str"),
        keep_releases=dict(type="int", default=3),
        owner=dict(type="str", default="root"),
        group=dict(type="str", default="root"),
        lock_timeout=dict(type="int", default=300),
    )


MUTUALLY_EXCLUSIVE = [("wheelhouse", "index_url")]
REQUIRED_IF = [("state", "present", ("wheel",))]
URL_OPTIONS = ("index_url", "proxy")
PATH_OPTIONS = ("root", "wheel", "constraints", "python", "ca_bundle", "wheelhouse", "config")


# --- validation (before anything is read or written) ------------------------------------------

def _account(option, value, lookup_name, lookup_id):
    """The id behind a user/group name or number; raises ReleaseError naming the option."""
    try:
        if value.isdigit():
            lookup_id(int(value))
            return int(value)
        return lookup_name(value)[2]
    except KeyError:
        raise ReleaseError(f"{option} {value!r} does not exist on this host") from None


def _path_error(option, path, kind):
    if path is None:
        return None
    if kind == "file" and not os.path.isfile(path):
        return f"{option}: {path} is not a file" if os.path.exists(path) else f"{option}: {path} does not exist"
    if kind == "dir" and not os.path.isdir(path):
        return f"{option}: {path} is not a directory" if os.path.exists(path) else f"{option}: {path} does not exist"
    return None


def validation_error(params):
    """The first problem with the options, as a message naming the option, or None."""
    if params["keep_releases"] < 2:
        return f"keep_releases must be >= 2 (current and previous), got {params['keep_releases']}"
    if params["lock_timeout"] < 0:
        return f"lock_timeout must be >= 0, got {params['lock_timeout']}"
    if params["state"] != "present":
        return None
    if params["wheelhouse"] and params["extra_index_urls"]:
        return "wheelhouse and extra_index_urls are mutually exclusive: a wheelhouse install uses no index"
    if any(not url for url in params["extra_index_urls"]) or params["index_url"] == "":
        return "index_url and extra_index_urls must not be empty strings"
    python = params["python"]
    if not (os.path.isfile(python) and os.access(python, os.X_OK)):
        return f"python: {python} does not exist or is not executable"
    return (_path_error("wheel", params["wheel"], "file")
            or _path_error("constraints", params["constraints"], "file")
            or _path_error("wheelhouse", params["wheelhouse"], "dir")
            or _path_error("ca_bundle", params["ca_bundle"], "file"))


def safe_invocation(params):
    """The module arguments without URL credentials (for the results' invocation)."""
    safe = dict(params)
    for name in URL_OPTIONS:
        safe[name] = redact(safe[name])
    safe["extra_index_urls"] = [redact(url) for url in safe["extra_index_urls"] or []]
    return {"module_args": safe}


class Artifact:
    """The wheel (and constraints) to deploy, read but not unpacked."""

    def __init__(self, wheel, constraints):
        self.wheel = wheel
        self.constraints = constraints
        self.version = parse_wheel_filename(wheel)[1]
        check_wheel_archive(wheel, self.version)
        try:
            self.digest = artifact_digest(wheel, constraints)
            self.wheel_sha256 = file_sha256(wheel)
            self.constraints_sha256 = file_sha256(constraints) if constraints else None
        except OSError as exc:
            raise ReleaseError(f"cannot read {exc.filename}: {exc.strerror}") from None
        self.release_id = make_release_id(self.version, self.digest)


# --- the run ----------------------------------------------------------------------------------

class Deployment:
    def __init__(self, module):
        self.module = module
        self.params = module.params
        for name in PATH_OPTIONS:  # commands run from /, so relative paths would change meaning
            if self.params[name]:
                self.params[name] = os.path.abspath(self.params[name])
        self.root = self.params["root"]
        self.layout = Layout(self.root)
        self.now = utcnow_text()
        self.uid = self.gid = None
        self.artifact = None
        self.removed = []
        self.config_checked = False
        self.facts = {}

    # results

    def fail(self, msg, **extra):
        facts = dict(self.facts, **extra)
        self.module.fail_json(msg=redact(msg), invocation=safe_invocation(self.params), **facts)

    def result(self, state, plan, entries):
        release_id = plan.release_id
        release_path = self.layout.release(release_id) if release_id else None
        result = dict(
            changed=plan.changed,
            release_id=release_id,
            release_path=release_path,
            venv_path=self.layout.venv(release_id) if release_id else None,
            version=self.artifact.version if self.artifact else (state.complete.get(release_id) or {}).get("version"),
            current_release_id=plan.current,
            previous_release_id=plan.previous,
            installed=plan.install,
            switched=plan.switch,
            config_checked=self.config_checked,
            pruned=plan.prune,
            releases=plan.releases,
            removed_partial=plan.remove if self.module.check_mode else self.removed,
            invocation=safe_invocation(self.params),
        )
        if result["version"] is None and release_id:
            result["version"] = release_id.rsplit("-", 1)[0]
        if self.module._diff:
            before_releases = newest_first(sorted(state.complete), entries, state.marker_mtime)
            result["diff"] = dict(
                before_header=self.layout.current, after_header=self.layout.current,
                before=diff_text(self._link_text(state.current), self._link_text(state.previous), before_releases),
                after=diff_text(plan.current, plan.previous, plan.releases))
        return result

    @staticmethod
    def _link_text(link):
        if link.release_id is not None:
            return link.release_id
        return f"-> {link.target} (not a release)" if link.exists else None

    # the steps

    def run(self):
        params = self.params
        error = validation_error(params)
        if error:
            raise ReleaseError(error)
        self.uid = _account("owner", params["owner"], pwd.getpwnam, pwd.getpwuid)
        self.gid = _account("group", params["group"], grp.getgrnam, grp.getgrgid)
        if params["smoke_user"]:
            _account("smoke_user", params["smoke_user"], pwd.getpwnam, pwd.getpwuid)
        if params["state"] == "present":
            self.artifact = Artifact(params["wheel"], params["constraints"])
            self.facts.update(release_id=self.artifact.release_id, version=self.artifact.version)
        if self.module.check_mode:
            with Lock(self.layout.lock, params["lock_timeout"], shared=True):
                state = scan(self.layout)
                plan, entries = self.plan(state)
            return self.result(state, plan, entries)
        if params["state"] == "present":
            self.prepare_root()
        elif not os.path.isdir(self.root):
            raise ReleaseError(f"cannot roll back: nothing is deployed under {self.root} (it does not exist)")
        with Lock(self.layout.lock, params["lock_timeout"]):
            state = scan(self.layout)
            self.facts.update(current_release_id=state.current.release_id,
                              previous_release_id=state.previous.release_id)
            plan, entries = self.plan(state)
            self.apply(state, plan)
        return self.result(state, plan, entries)

    def plan(self, state):
        entries, sequence, problem = load_history(self.layout.history)
        if problem:
            self.module.warn(problem)
        if self.params["state"] == "present":
            plan = plan_present(state, self.artifact.release_id, self.params["keep_releases"], entries, sequence,
                                self.now)
        else:
            plan = plan_rollback(state, self.params["keep_releases"], entries, sequence, self.now)
        return plan, entries

    def prepare_root(self):
        parent = os.path.dirname(self.root)
        try:
            if not os.path.isdir(parent):
                os.makedirs(parent, 0o755)
            ensure_directory(self.root, self.uid, self.gid)
            ensure_directory(self.layout.releases, self.uid, self.gid)
        except OSError as exc:
            raise self.os_error(f"cannot create {exc.filename or self.root}", exc) from None

    def os_error(self, what, exc):
        if exc.errno == errno.ENOSPC:
            return ReleaseError(no_space_message(self.root) + f" ({what})")
        return ReleaseError(f"{what}: {exc.strerror or exc}")

    def apply(self, state, plan):
        self.facts["removed_partial"] = self.removed
        for path in plan.remove:
            try:
                discard(path)
            except OSError as exc:
                self.module.warn(f"cannot remove {path} (left by an interrupted run): {exc.strerror or exc}")
            else:
                self.removed.append(path)
        if self.removed:
            self.module.warn(f"removed {len(self.removed)} leftover(s) of interrupted runs under {self.root}: "
                             + ", ".join(self.removed))
        release_id = plan.release_id
        if state.current.exists and state.current.release_id is None:
            self.module.warn(f"{self.layout.current} pointed to {state.current.target}, which is not a release of "
                             f"this module; it now points to releases/{release_id}")
        if plan.install:
            self.install(release_id)
        elif plan.switch:
            self.smoke_test(release_id, version_of_release(state, release_id))
        try:
            if plan.rollback:
                replace_link(self.layout.current, release_link_target(plan.current), self.uid, self.gid)
                self.set_previous(state, plan)
            elif plan.switch:
                self.set_previous(state, plan)
                replace_link(self.layout.current, release_link_target(plan.current), self.uid, self.gid)
            if plan.install or plan.switch or plan.prune:
                write_history(self.layout, plan.entries, plan.sequence, self.uid, self.gid)
        except OSError as exc:
            raise self.os_error(f"cannot switch {self.layout.current} to {release_id}", exc) from None
        for pruned in plan.prune:
            try:
                discard(self.layout.release(pruned))
            except OSError as exc:
                self.module.warn(f"cannot delete the old release {pruned}: {exc.strerror or exc}; "
                                 "the next run retries")

    def set_previous(self, state, plan):
        if plan.previous is not None:
            if state.previous.target != release_link_target(plan.previous):
                replace_link(self.layout.previous, release_link_target(plan.previous), self.uid, self.gid)
        elif state.previous.exists:
            remove_link(self.layout.previous)

    # installing

    def install(self, release_id):
        path = self.layout.release(release_id)
        old_umask = os.umask(0o022)
        created = False
        try:
            os.mkdir(path, 0o755)
            created = True
            self.create_venv(release_id)
            self.pip_install(release_id)
            settle_tree(path, self.uid, self.gid)
            self.smoke_test(release_id, self.artifact.version)
            sync_filesystem(path)
            write_marker(self.layout, release_id, self.marker_info(), self.uid, self.gid)
        except OSError as exc:
            self.discard_quietly(path, created)
            raise self.os_error(f"cannot install release {release_id} into {path}", exc) from None
        except BaseException:
            self.discard_quietly(path, created)
            raise
        finally:
            os.umask(old_umask)

    def discard_quietly(self, path, created):
        if not created:
            return
        try:
            discard(path)
        except OSError as exc:
            self.module.warn(f"cannot remove the failed release {path}: {exc.strerror or exc}; the next run retries")

    def marker_info(self):
        artifact = self.artifact
        return {"version": artifact.version, "wheel": os.path.basename(artifact.wheel),
                "wheel_sha256": artifact.wheel_sha256, "constraints_sha256": artifact.constraints_sha256,
                "digest": artifact.digest, "python": os.path.realpath(self.params["python"]),
                "installed": self.now}

    def run_command(self, argv, environ_update=None):
        """``(rc, stdout, stderr)`` of ``argv`` run from ``/``; a program that cannot start is a ReleaseError.

        Ansible's own handling of that case would return the whole command line, index URL included.
        """
        try:
            return self.module.run_command(argv, cwd="/", environ_update=environ_update, handle_exceptions=False)
        except OSError as exc:
            raise ReleaseError(f"cannot run {argv[0]}: {exc.strerror or exc}; current was not changed") from None

    def command_failure(self, what, rc, out, err):
        output = (out or "") + "\n" + (err or "")
        if is_no_space(output):
            return ReleaseError(f"{no_space_message(self.root)} ({what}); current was not changed")
        return None

    def create_venv(self, release_id):
        python = self.params["python"]
        venv = self.layout.venv(release_id)
        rc, out, err = self.run_command([python, "-m", "venv", venv])
        if rc == 0:
            return
        failure = self.command_failure(f"creating the virtualenv {venv}", rc, out, err)
        if failure:
            raise failure
        hint = ""
        if "ensurepip" in (out or "") + (err or ""):
            hint = " (the venv module lacks ensurepip: install python3-venv)"
        raise ReleaseError(f"cannot create the virtualenv {venv} with {python} -m venv (exit {rc}){hint}: "
                           f"{tail((out or '') + chr(10) + (err or ''))}; current was not changed")

    def pip_install(self, release_id):
        params = self.params
        argv = pip_install_argv(os.path.join(self.layout.venv(release_id), "bin", "python"), params["wheel"],
                                constraints=params["constraints"], wheelhouse=params["wheelhouse"],
                                index_url=params["index_url"], extra_index_urls=params["extra_index_urls"],
                                ca_bundle=params["ca_bundle"], proxy=params["proxy"])
        rc, out, err = self.run_command(argv, environ_update={"PIP_NO_INPUT": "1"})
        if rc == 0:
            return
        failure = self.command_failure(f"pip install of {os.path.basename(params['wheel'])}", rc, out, err)
        if failure:
            raise failure
        output = (out or "") + "\n" + (err or "")
        problem = pip_problem(output)
        source = f"wheelhouse {params['wheelhouse']}" if params["wheelhouse"] else "the package index"
        raise ReleaseError(f"pip could not install {os.path.basename(params['wheel'])} from {source} (exit {rc})"
                           + (f": {problem}" if problem else "")
                           + f"; current was not changed. pip's last lines:\n{tail(output)}")

    # smoke test

    def smoke_test(self, release_id, version):
        executable = self.layout.executable(release_id)
        where = f"smoke test of release {release_id} failed"
        rc, out, err = self.run_command([executable, "--version"])
        output = (out or "") + "\n" + (err or "")
        if rc != 0:
            raise ReleaseError(f"{where}: {executable} --version exited with {rc}: {tail(output)}; "
                               "current was not changed")
        if not version_printed(output, version):
            printed = output.strip().splitlines()[0] if output.strip() else ""
            raise ReleaseError(f"{where}: {executable} --version printed {redact(printed)!r}, expected the version "
                               f"{version}; current was not changed")
        config = self.params["config"]
        if not config or not os.path.exists(config):
            return
        argv, environ = self.as_smoke_user([executable, "config", "check", "--config", config])
        rc, out, err = self.run_command(argv, environ_update=environ)
        if rc != 0:
            user = f" as {self.params['smoke_user']}" if self.params["smoke_user"] else ""
            raise ReleaseError(f"{where}: {EXECUTABLE} config check --config {config}{user} exited with {rc}: "
                               f"{tail((out or '') + chr(10) + (err or ''))}; current was not changed")
        self.config_checked = True

    def as_smoke_user(self, argv):
        user = self.params["smoke_user"]
        if not user:
            return argv, {}
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        if entry.pw_uid == os.geteuid():
            return argv, {}
        if os.geteuid() != 0:
            raise ReleaseError(f"smoke_user {user!r}: running the configuration check as another user needs root")
        environ = {"HOME": entry.pw_dir, "USER": entry.pw_name, "LOGNAME": entry.pw_name}
        setpriv = self.module.get_bin_path("setpriv")
        if setpriv:
            return [setpriv, f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups", "--", *argv], \
                environ
        runuser = self.module.get_bin_path("runuser")
        if runuser:
            return [runuser, "-u", entry.pw_name, "--", *argv], environ
        raise ReleaseError(f"smoke_user {user!r}: neither setpriv nor runuser (util-linux) is installed")


def version_of_release(state, release_id):
    marker = state.complete.get(release_id) or {}
    version = marker.get("version")
    return version if isinstance(version, str) and version else release_id.rsplit("-", 1)[0]


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True,
                           mutually_exclusive=MUTUALLY_EXCLUSIVE, required_if=REQUIRED_IF)
    deployment = Deployment(module)
    try:
        result = deployment.run()
    except ReleaseError as exc:
        deployment.fail(str(exc))
    except OSError as exc:
        deployment.fail(str(deployment.os_error(f"error under {deployment.root}", exc)))
    else:
        module.exit_json(**result)


if __name__ == "__main__":
    main()
