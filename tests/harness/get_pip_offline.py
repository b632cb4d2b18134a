"""Stand-in for ansible-test's get-pip.py bootstrap script, whose download host CI cannot reach.

ansible-test runs the cached script (~/.ansible/test/cache/get_pip_<version>.py) inside each fresh
virtual environment it makes, with the pinned pip/setuptools/wheel requirements as arguments, exactly
as it would run get-pip.py. This does the same job from the interpreter's bundled pip wheel
(ensurepip) and then installs the requested pins from the configured package index.
"""

import subprocess
import sys

GET_PIP_ONLY_FLAGS = {"--no-setuptools", "--no-wheel"}


def main() -> None:
    # In a child process: ensurepip.bootstrap() points PIP_CONFIG_FILE at /dev/null in the
    # process that calls it, which would hide the pip configuration from the install below.
    subprocess.check_call([sys.executable, "-m", "ensurepip"])
    args = [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY_FLAGS]
    subprocess.check_call([sys.executable, "-m", "pip", "install", *args])


if __name__ == "__main__":
    main()
