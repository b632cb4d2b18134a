#!/usr/bin/env bash
# Run ansible-test (from .venv) in the current directory with a private HOME that carries what it
# needs and cannot get on these machines:
#  - ansible-test starts every virtual environment with a get-pip.py it downloads from a host CI
#    cannot reach; the cache slot it checks first gets get_pip_offline.py instead;
#  - ansible-test runs pip with a scrubbed environment (HOME survives, PIP_* does not), so the
#    machine's pip settings (certificate bundle, index) go into the private HOME's pip.conf.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
home="$root/.cache/ansible-test-home"

requirements_py="$(python -c 'import ansible_test, os; print(os.path.join(os.path.dirname(ansible_test.__file__), "_internal", "python_requirements.py"))')"
pip_version="$(grep -oP "pip='\K[0-9.]+" "$requirements_py" | head -n 1)"
[ -n "$pip_version" ] || { echo "ansible-test.sh: cannot tell which pip ansible-test bootstraps" >&2; exit 1; }

mkdir -p "$home/.ansible/test/cache" "$home/.config/pip"
cp "$here/get_pip_offline.py" "$home/.ansible/test/cache/get_pip_${pip_version//./_}.py"
{
  echo "[global]"
  if [ -n "${PIP_CERT:-}" ]; then echo "cert = $PIP_CERT"; fi
  if [ -n "${PIP_INDEX_URL:-}" ]; then echo "index-url = $PIP_INDEX_URL"; fi
  if [ -n "${PIP_EXTRA_INDEX_URL:-}" ]; then echo "extra-index-url = $PIP_EXTRA_INDEX_URL"; fi
  echo "disable-pip-version-check = true"
  # ansible-test installs each test's requirements into a venv of its own; keep its log to errors.
  echo "progress-bar = off"
  echo "quiet = 1"
} >"$home/.config/pip/pip.conf"

HOME="$home" exec ansible-test "$@"
