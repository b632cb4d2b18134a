#!/usr/bin/python
# Copyright: clawbot.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: key_rotate
short_description: Create, rotate and prune a keyring file of secrets
version_added: 0.1.0
description:
  - Manages a keyring file of secrets (API access tokens, the bot's encryption keys, webhook secrets).
  - Creates the file when it is missing, rotates the current key when it is older than O(max_age_days),
    when O(force=true), or when the requested O(format)/O(length) differ from the current generated key's.
  - Keeps up to O(keep_previous) retired keys (optionally only for O(grace_days)) so that data encrypted
    or signed with them stays readable. Pruning also happens on runs that do not rotate.
  - With O(secret) the key comes from outside (for example a new model API key from the vault). The module
    then never generates a key; it records when it first saw the value and, with O(verify_url), checks the
    new value against the provider's OpenAI-compatible models endpoint before switching to it.
  - The file is written atomically (temporary file in the same directory, fsync, rename, fsync of the
    directory) while holding an exclusive lock on C(.<name>.lock) in the same directory, so an interrupted
    run never leaves a half-written keyring. Temporary files left by an interrupted run are removed.
  - Results and diffs contain key ids, dates and ages, never a secret.
  - 'File format (version 1): C({"version": 1, "current": id, "keys": {id: secret}, "meta": {id: {"created",
    "retired", "source", "format", "length"}}}). The bot service reads C(current) and C(keys).'
  - 'Legacy files without C(version)/C(meta) (C({"current": id, "keys": {id: base64}})) are adopted and
    rewritten as version 1; their keys get the modification time of the file as creation time.'
  - The parent directory must exist; the module does not create it.
author:
  - clawbot.stack contributors (@clawbot)
requirements:
  - A POSIX system (C(fcntl.flock)).
attributes:
  check_mode:
    support: full
    description: Can run in check_mode and return changed status prediction without modifying target.
    details:
      - The id of a key that would be created is reported as "(new)". No verification request is sent.
  diff_mode:
    support: full
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    details:
      - The diff lists the current key id, one line per key with its creation and retirement dates and
        source, and owner/group/mode changes. It never contains a secret.
  idempotent:
    support: partial
    description: When run twice in a row with the same arguments, the second run reports no change.
    details:
      - Not idempotent with O(force=true), which rotates on every run.
  platform:
    support: full
    platforms: posix
    description: Target OS/families that can be operated against.
options:
  path:
    description:
      - Path of the keyring file. Its directory must exist.
      - A symbolic link is followed; the file it points to is replaced.
    type: path
    required: true
  max_age_days:
    description:
      - Rotate the current key when it is older than this many days. Must be at least 1.
      - For a key from O(secret) (or a current key that came from outside) the module cannot rotate;
        it returns RV(overdue=true) and a warning instead.
    type: int
    default: 90
  force:
    description:
      - Rotate even when the current key is not due.
      - Also replaces a current key that came from outside with a generated one.
      - Mutually exclusive with O(secret).
    type: bool
    default: false
  keep_previous:
    description:
      - How many retired keys to keep (the most recently retired first). V(0) removes the previous key
        as soon as it is retired. Must be at least 0.
    type: int
    default: 2
  grace_days:
    description:
      - Also remove retired keys that were retired more than this many days ago. Must be at least 0.
      - When not set, retired keys are only limited by O(keep_previous).
    type: int
  length:
    description:
      - Number of random bytes of a generated key, between 16 and 512.
      - V(32) with O(format=base64) is the AES-256 key the bot's encryption keyring needs.
      - Ignored when O(secret) is given.
    type: int
    default: 32
  format:
    description:
      - How a generated key is written. V(hex) is lowercase hex, V(base64) standard base64 with padding,
        V(urlsafe) URL-safe base64 without padding.
      - When the current generated key was made with another format or length, it is rotated (RV(reason=spec_changed)).
      - Ignored when O(secret) is given.
    type: str
    choices: [hex, base64, urlsafe]
    default: base64
  secret:
    description:
      - A key provided from outside (for example from a vault). When it differs from the current key it
        becomes the current key (RV(reason=new_secret)); the module never generates a key for this file.
      - O(force), O(format) and O(length) are ignored for the file; O(force=true) together with O(secret)
        is an error.
      - The value is never logged or returned.
    type: str
  verify_url:
    description:
      - Base URL of an OpenAI-compatible provider, for example V(https://api.openai.com/v1).
      - 'When O(secret) differs from the current key, the module sends C(GET <base>/models) (when the base
        ends with C(/v1)) or C(GET <base>/v1/models) with the header C(Authorization: Bearer <secret>) and
        switches only when the answer is HTTP 200 with a JSON C(data) list. Any other answer or no answer
        fails the task without changing the keyring.'
      - Not used in check mode or with O(report_only=true) (RV(verified) is V(null) then). Requires O(secret).
    type: str
  verify_timeout:
    description:
      - Timeout in seconds of the verification request. Must be greater than 0.
    type: float
    default: 10
  validate_certs:
    description:
      - Validate the TLS certificate of O(verify_url).
    type: bool
    default: true
  ca_path:
    description:
      - PEM file of CA certificates to validate O(verify_url) with.
    type: path
  owner:
    description:
      - Owner (name or uid) of the keyring file. When not set, a rewritten file keeps the owner of the
        file it replaces (when the module runs as root).
    type: str
  group:
    description:
      - Group (name or gid) of the keyring file. When not set, a rewritten file keeps the group of the
        file it replaces (when the module runs as root).
    type: str
  mode:
    description:
      - Permissions of the keyring file, in octal (V('0600')) or symbolic (V(u=rw,go=)) form.
      - A file with other permissions is changed (and reported changed) even when no key rotates.
      - Set to V(null) to keep the permissions of the file being replaced (new files get V(0600)).
    type: raw
    default: '0600'
  report_only:
    description:
      - Read-only compliance mode. Never writes anything (not even owner/group/mode) and always returns
        C(changed=false), with RV(overdue), RV(would_rotate) and RV(reason) describing the file as it is.
    type: bool
    default: false
  fail_on_overdue:
    description:
      - Fail, naming the key id and its age, when the current key is older than O(max_age_days) after
        this run (with O(report_only=true), as it is now). Nothing is changed when the task fails this way.
    type: bool
    default: false
notes:
  - The secret values are never part of the results, warnings, errors or diff.
  - The bot service's encryption keyring needs O(format=base64) and O(length=32) (the defaults).
seealso:
  - name: OpenAI models endpoint
    description: The endpoint used to verify a new API key.
    link: https://platform.openai.com/docs/api-reference/models/list
"""

EXAMPLES = r"""
- name: Create or rotate the bot's encryption keyring (every 90 days, keep two old keys)
  clawbot.stack.key_rotate:
    path: /etc/clawbot/keyring.json
    owner: clawbot
    group: clawbot
    mode: '0600'
  register: keyring
  notify: Reload clawbot

- name: Webhook signing secrets in hex, rotated monthly, old ones dropped after 7 days
  clawbot.stack.key_rotate:
    path: /etc/clawbot/webhook-secrets.json
    format: hex
    length: 32
    max_age_days: 30
    grace_days: 7

- name: Switch to the model API key from the vault after checking it with the provider
  clawbot.stack.key_rotate:
    path: /etc/clawbot/model-api-key.json
    secret: "{{ vault_model_api_key }}"
    verify_url: https://api.openai.com/v1
    keep_previous: 1
    grace_days: 1

- name: Compliance run - fail when any current key is overdue, change nothing
  clawbot.stack.key_rotate:
    path: /etc/clawbot/keyring.json
    report_only: true
    fail_on_overdue: true
"""

RETURN = r"""
path:
  description: Path of the keyring file (symbolic links resolved).
  returned: always
  type: str
  sample: /etc/clawbot/keyring.json
rotated:
  description:
    - Whether a new current key was (in check mode - would be) put in place.
    - Always V(false) with O(report_only=true).
  returned: always
  type: bool
  sample: true
reason:
  description:
    - Why the current key is (or would be) replaced, V(null) when it stays.
    - One of V(created), V(expired), V(forced), V(spec_changed), V(new_secret).
  returned: always
  type: str
  sample: expired
would_rotate:
  description:
    - Whether the current key is due for replacement (RV(reason) is not V(null)).
    - Useful with O(report_only=true).
  returned: always
  type: bool
  sample: false
current_key_id:
  description:
    - Id of the current key after this run.
    - V((new\)) for a key that would be created in check mode, V(null) when there is no keyring.
  returned: always
  type: str
  sample: k20261121T101500Z-a1b2
key_ids:
  description: Ids of all keys in the keyring after this run, newest first.
  returned: always
  type: list
  elements: str
  sample: [k20261121T101500Z-a1b2, k20260801T000000Z-0c3d]
removed_key_ids:
  description:
    - Ids of retired keys removed (in check mode - that would be removed) by O(keep_previous) or O(grace_days).
    - Empty with O(report_only=true).
  returned: always
  type: list
  elements: str
  sample: [k20260501T000000Z-77aa]
keys:
  description: The keys after this run, newest first, without their secrets.
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: Key id.
      type: str
      returned: always
      sample: k20261121T101500Z-a1b2
    created:
      description: UTC time the key was created (or first seen, for a key from outside).
      type: str
      returned: always
      sample: '2026-11-21T10:15:00Z'
    retired:
      description: UTC time the key stopped being current, V(null) for the current key.
      type: str
      returned: always
      sample: null
    age_days:
      description: Age in days, one decimal.
      type: float
      returned: always
      sample: 12.5
    source:
      description: V(generated), V(external) (from O(secret)) or V(unknown) (adopted from a legacy file).
      type: str
      returned: always
      sample: generated
    format:
      description: V(hex), V(base64), V(urlsafe), V(external) or V(unknown).
      type: str
      returned: always
      sample: base64
    length:
      description: Number of random bytes of a generated key, V(null) when not known.
      type: int
      returned: always
      sample: 32
    current:
      description: Whether this is the current key.
      type: bool
      returned: always
      sample: true
current_age_days:
  description: Age of the current key in days (one decimal), V(null) when there is no keyring.
  returned: always
  type: float
  sample: 12.5
overdue:
  description:
    - Whether the current key is older than O(max_age_days) after this run.
    - With O(report_only=true), whether it is older now.
  returned: always
  type: bool
  sample: false
next_rotation:
  description: UTC time at which the current key becomes older than O(max_age_days), V(null) when there is no keyring.
  returned: always
  type: str
  sample: '2027-02-19T10:15:00Z'
verified:
  description:
    - V(true) when the new O(secret) was accepted by O(verify_url) in this run.
    - V(null) when no verification happened (no O(verify_url), the secret did not change, check mode
      or O(report_only=true)).
  returned: always
  type: bool
  sample: true
adopted:
  description:
    - Whether the file had keys without metadata (legacy format) and was (in check mode - would be)
      rewritten as version 1. Always V(false) with O(report_only=true).
  returned: always
  type: bool
  sample: false
"""

import contextlib  # noqa: E402 - Ansible modules import below their documentation
import grp  # noqa: E402
import os  # noqa: E402
import pwd  # noqa: E402
import re  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.clawbot.stack.plugins.module_utils.keyring import (  # noqa: E402
    GENERATED_FORMATS,
    FileLock,
    KeyringError,
    Policy,
    age_days,
    atomic_write,
    decide,
    describe,
    diff_text,
    ids_newest_first,
    is_overdue,
    load,
    new_key,
    next_rotation,
    prune,
    remove_stale_temp_files,
    rotate,
    utcnow,
)
from ansible_collections.clawbot.stack.plugins.module_utils.webclient import (  # noqa: E402
    HttpFailure,
    redact_url,
    request,
)

MIN_LENGTH = 16
MAX_LENGTH = 512
VERIFY_RETRIES = 2
PROVIDER_MESSAGE_MAX = 300
SYMBOLIC_MODE_RE = re.compile(r"^[ugoa]*(?:[-+=](?:[rwxXst]*|[ugo]))+$")


def argument_spec():
    return dict(
        path=dict(type="path", required=True),
        max_age_days=dict(type="int", default=90),
        force=dict(type="bool", default=False),
        keep_previous=dict(type="int", default=2),
        grace_days=dict(type="int"),
        length=dict(type="int", default=32),
        format=dict(type="str", choices=list(GENERATED_FORMATS), default="base64"),
        secret=dict(type="str", no_log=True),
        verify_url=dict(type="str"),
        verify_timeout=dict(type="float", default=10),
        validate_certs=dict(type="bool", default=True),
        ca_path=dict(type="path"),
        owner=dict(type="str"),
        group=dict(type="str"),
        mode=dict(type="raw", default="0600"),
        report_only=dict(type="bool", default=False),
        fail_on_overdue=dict(type="bool", default=False),
    )


# --- validation (before anything is read or written) ------------------------------------------

def _mode_error(mode):
    if mode is None:
        return None
    if isinstance(mode, int) and not isinstance(mode, bool):
        return None if 0 <= mode <= 0o7777 else f"mode must be between 0 and 07777, got {mode:o}"
    text = str(mode)
    if text.isdigit():
        if set(text) <= set("01234567") and int(text, 8) <= 0o7777:
            return None
    elif all(SYMBOLIC_MODE_RE.match(clause) for clause in text.split(",")):
        return None
    return f"mode must be an octal mode like '0600' or a symbolic mode like 'u=rw,go=', got {text!r}"


def _account_error(option, name, lookup):
    if name is None or name.isdigit():
        return None
    try:
        lookup(name)
    except KeyError:
        return f"{option} {name!r} does not exist on this host"
    return None


def _secret_error(params):
    secret = params["secret"]
    if secret is None:
        return None
    if params["force"]:
        return "force and secret are mutually exclusive: a key from secret is never replaced by a generated one"
    if secret == "":
        return "secret must not be empty"
    if params["verify_url"] is not None:
        try:
            secret.encode("latin-1")
        except UnicodeEncodeError:
            return "secret contains characters that cannot be sent in an HTTP Authorization header (verify_url)"
        if any(char in secret for char in "\r\n\0"):
            return "secret contains line breaks, which cannot be sent in an HTTP Authorization header (verify_url)"
    return None


def _verify_url_error(params):
    url = params["verify_url"]
    if url is None:
        return None
    if params["secret"] is None:
        return "verify_url requires secret (the new key to verify)"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"verify_url must be an http:// or https:// URL, got {redact_url(url)!r}"
    if params["ca_path"] is not None and not os.path.isfile(params["ca_path"]):
        return f"ca_path {params['ca_path']} is not a file"
    return None


def validation_error(params):
    """The first problem with the options, as a message naming the option, or None."""
    checks = (
        (params["max_age_days"] < 1, f"max_age_days must be >= 1, got {params['max_age_days']}"),
        (params["keep_previous"] < 0, f"keep_previous must be >= 0, got {params['keep_previous']}"),
        (params["grace_days"] is not None and params["grace_days"] < 0,
         f"grace_days must be >= 0, got {params['grace_days']}"),
        (not MIN_LENGTH <= params["length"] <= MAX_LENGTH,
         f"length must be between {MIN_LENGTH} and {MAX_LENGTH}, got {params['length']}"),
        (params["verify_timeout"] <= 0, f"verify_timeout must be > 0, got {params['verify_timeout']}"),
    )
    for failed, message in checks:
        if failed:
            return message
    return (_mode_error(params["mode"])
            or _account_error("owner", params["owner"], pwd.getpwnam)
            or _account_error("group", params["group"], grp.getgrnam)
            or _secret_error(params)
            or _verify_url_error(params))


def resolve_path(path):
    """The real file behind ``path`` and an error message about its location, if any."""
    if os.path.islink(path):
        path = os.path.realpath(path)
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        return path, f"path: directory {directory} does not exist; create it first (with the right owner)"
    if os.path.isdir(path):
        return path, f"path: {path} is a directory, not a keyring file"
    return path, None


# --- verification of an external secret --------------------------------------------------------

def models_url(base):
    base = base.rstrip("/")
    if base.endswith("/v1"):
        return base + "/models"
    return base + "/v1/models"


def provider_message(result, secret):
    """The provider's error text, without the secret, shortened."""
    body = result.json()
    message = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            message = error.get("message")
        elif isinstance(error, str):
            message = error
        if message is None and isinstance(body.get("message"), str):
            message = body["message"]
    if not isinstance(message, str):
        message = " ".join(result.text.split())
    message = message.replace(secret, "********")
    if len(message) > PROVIDER_MESSAGE_MAX:
        message = message[:PROVIDER_MESSAGE_MAX] + "..."
    return message or "(no message)"


def verification_problem(params, secret):
    """None when the provider accepts ``secret``, else ``(message, http_status or None)``."""
    url = models_url(params["verify_url"])
    try:
        result = request("GET", url, headers={"Authorization": f"Bearer {secret}"},
                         timeout=params["verify_timeout"], retries=VERIFY_RETRIES,
                         validate_certs=params["validate_certs"], ca_path=params["ca_path"])
    except HttpFailure as exc:
        return f"cannot verify the new secret: {exc.message}", None
    body = result.json()
    if result.status == 200 and isinstance(body, dict) and isinstance(body.get("data"), list):
        return None
    detail = provider_message(result, secret)
    if result.status in (401, 403):
        return f"secret was rejected by {result.url}: HTTP {result.status}: {detail}", result.status
    return f"cannot verify secret against {result.url}: HTTP {result.status}: {detail}", result.status


def verify_secret(module, secret):
    """True when the provider accepts ``secret``; fails the module otherwise (nothing changed yet)."""
    problem = verification_problem(module.params, secret)
    if problem is not None:
        message, status = problem
        module.fail_json(msg=f"{message}; the keyring was not changed", status=status, path=module.params["path"])
    return True


# --- file attributes --------------------------------------------------------------------------

def file_args(module, path):
    return module.load_file_common_arguments(module.params, path=path)


def attribute_lines(attr_diff, side):
    values = attr_diff.get(side, {})
    return "".join(f"{name}: {values[name]}\n" for name in sorted(values))


def copy_attributes(source, target):
    """Give ``target`` the owner, group and permissions of ``source`` (owner only where allowed)."""
    info = os.stat(source)
    target_info = os.stat(target)
    if (info.st_uid, info.st_gid) != (target_info.st_uid, target_info.st_gid):
        # not root: like Ansible's atomic_move, the file then belongs to the user running the module
        with contextlib.suppress(PermissionError):
            os.chown(target, info.st_uid, info.st_gid)
    os.chmod(target, info.st_mode & 0o7777)


# --- the run ----------------------------------------------------------------------------------

def policy_from(params):
    return Policy(max_age_days=params["max_age_days"], force=params["force"],
                  keep_previous=params["keep_previous"], grace_days=params["grace_days"],
                  fmt=params["format"], length=params["length"], secret=params["secret"])


def summary(keyring, policy, now):
    meta = keyring.current_meta if keyring is not None else None
    return dict(
        current_key_id=keyring.current if keyring is not None else None,
        key_ids=ids_newest_first(keyring),
        keys=describe(keyring, now) if keyring is not None else [],
        current_age_days=age_days(meta["created"], now) if meta else None,
        overdue=is_overdue(keyring, now, policy.max_age_days),
        next_rotation=next_rotation(keyring, policy.max_age_days),
    )


def check_overdue(module, keyring, facts, policy):
    """Warn about an overdue key from outside; fail when fail_on_overdue asks to."""
    if not facts["overdue"]:
        return
    message = (f"key {keyring.current} is overdue: {facts['current_age_days']:.1f} days old, "
               f"max_age_days is {policy.max_age_days}")
    if keyring.current_meta["source"] == "external":
        module.warn(f"{message}; it came from outside (secret), so rotate it in the vault and pass the new value "
                    "as secret")
    if module.params["fail_on_overdue"]:
        module.fail_json(msg=f"{message} (fail_on_overdue)", path=module.params["path"], **facts)


def report(module, path, policy, now):
    """report_only: read, describe, never write."""
    before = load(path)[0]
    reason = decide(before, policy, now)
    facts = summary(before, policy, now)
    check_overdue(module, before, facts, policy)
    return dict(changed=False, path=path, rotated=False, reason=reason, would_rotate=reason is not None,
                removed_key_ids=[], verified=None, adopted=False, **facts)


def manage(module, path, policy, now):
    """Decide, verify, rotate, prune and write (or, in check mode, only tell)."""
    check_mode = module.check_mode
    if not check_mode:
        stale = remove_stale_temp_files(path)
        if stale:
            module.warn(f"removed {len(stale)} temporary file(s) left by an interrupted run next to {path}")
    before, document = load(path)
    reason = decide(before, policy, now)
    verified = None
    after = before.copy() if before is not None else None
    if reason is not None:
        if policy.external and module.params["verify_url"] and not check_mode:
            verified = verify_secret(module, policy.secret)
        key_id, secret, meta = new_key(policy, now, before.keys if before else (), placeholder=check_mode)
        after = rotate(before, key_id, secret, meta, now)
    after.legacy = False  # whatever is written is version 1
    removed = prune(after, now, policy.keep_previous, policy.grace_days)
    content_changed = before is None or after.to_document() != document
    facts = summary(after, policy, now)
    check_overdue(module, after, facts, policy)

    attr_diff = {}
    attrs_changed = False
    if before is not None:
        attrs_changed = module.set_fs_attributes_if_different(file_args(module, path), False, diff=attr_diff)
    if content_changed and not check_mode:
        atomic_write(path, after.serialise(), prepare=temp_file_preparer(module, path, before is not None))

    result = dict(changed=content_changed or attrs_changed, path=path, rotated=reason is not None, reason=reason,
                  would_rotate=reason is not None, removed_key_ids=removed, verified=verified,
                  adopted=before is not None and before.legacy, **facts)
    if module._diff:
        result["diff"] = dict(before_header=path, after_header=path,
                              before=diff_text(before) + attribute_lines(attr_diff, "before"),
                              after=diff_text(after) + attribute_lines(attr_diff, "after"))
    return result


def temp_file_preparer(module, path, replacing):
    """Set owner/group/mode on the temp file before it is renamed over ``path``."""
    def prepare(temp):
        if replacing:
            copy_attributes(path, temp)  # the old file already has the requested attributes
        else:
            module.set_fs_attributes_if_different(file_args(module, temp), False)
    return prepare


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    params = module.params
    error = validation_error(params)
    if error:
        module.fail_json(msg=error)
    path, error = resolve_path(params["path"])
    if error:
        module.fail_json(msg=error, path=path)
    policy = policy_from(params)
    now = utcnow()
    try:
        if params["report_only"]:
            result = report(module, path, policy, now)
        elif module.check_mode:
            result = manage(module, path, policy, now)
        else:
            with FileLock(path):
                result = manage(module, path, policy, now)
    except KeyringError as exc:
        module.fail_json(msg=str(exc), path=path)
    else:
        module.exit_json(**result)


if __name__ == "__main__":
    main()
