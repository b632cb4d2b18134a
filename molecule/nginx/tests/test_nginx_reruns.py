"""The validate path and the files mode: the role's test script and more runs of the role on the
converged host (after test_nginx.py, which runs against the self-signed mode).

1. The script the role validates every configuration file with refuses a broken candidate (and
   one that no include reaches), accepts the live one, and never touches the live tree.
2. A run whose site nginx refuses (an upstream name that does not resolve) fails, names nginx's
   error, and leaves the live configuration and the running nginx as they were.
3. The files mode: a key that does not belong to the certificate fails the run before anything
   changes; a matching RSA pair is then served with the ECDHE-RSA AEAD suites only.

The runs are converge.yml with extra vars against Molecule's inventory (molecule.yml).
"""

from __future__ import annotations

import pytest
from conftest import SITE, VALIDATE, converge, curl, handshake, tls12_scan, tls_control_server

FILES_DIR = "/etc/ssl/molecule-files"
EXPECTED_RSA_TLS12 = {"ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-CHACHA20-POLY1305"}


def _live_state(host) -> tuple[str, str]:
    with host.sudo():
        # The files, and nginx's processes: a reload starts new workers, a restart a new master.
        return (host.check_output(f"sha256sum {SITE} /etc/nginx/nginx.conf"),
                host.check_output("pid=$(cat /run/nginx.pid); echo $pid; pgrep -P $pid | sort"))


def test_validate_script_refuses_a_broken_candidate(host):
    before = _live_state(host)
    with host.sudo():
        host.check_output(f"cp {SITE} /tmp/candidate-good.conf && cp {SITE} /tmp/candidate-broken.conf && "
                          "sed -i 's/^    keepalive 32;/    keepalive 32;\\n    no_such_directive on;/' "
                          "/tmp/candidate-broken.conf")
        assert "no_such_directive on;" in host.file("/tmp/candidate-broken.conf").content_string
        broken = host.run(f"{VALIDATE} {SITE} /tmp/candidate-broken.conf")
        good = host.run(f"{VALIDATE} {SITE} /tmp/candidate-good.conf")
        # A file that no include reaches would pass untested: refused.
        unused = host.run(f"{VALIDATE} /etc/nginx/unused/clawbot.conf /tmp/candidate-broken.conf")
        leftovers = host.run("ls -d /tmp/clawbot-nginx-validate.* 2>/dev/null")
    assert broken.rc == 1, broken.stderr
    assert f'unknown directive "no_such_directive" in {SITE}:' in broken.stderr
    assert "nginx refused the configuration with the candidate for /etc/nginx/conf.d/clawbot.conf" in broken.stderr
    assert good.rc == 0, good.stderr
    assert unused.rc == 1 and "did not read the candidate" in unused.stderr, unused.stderr
    assert leftovers.stdout == ""  # the copies are removed
    assert _live_state(host) == before


def test_role_run_with_a_site_nginx_refuses_changes_nothing(host):
    before = _live_state(host)
    run = converge({"nginx_upstream_servers": ["no-such-host.invalid:18789"]})
    out = run.stdout + run.stderr
    assert run.returncode != 0, out[-3000:]
    assert ('nginx: task "Site | Write the clawbot site, tested in a copy of /etc/nginx before it goes live, '
            'to /etc/nginx/conf.d/clawbot.conf" failed (failed to validate).') in out, out[-3000:]
    assert 'host not found in upstream "no-such-host.invalid:18789" in /etc/nginx/conf.d/clawbot.conf:' in out
    assert "No file nginx reads had been changed: the live configuration is unchanged." in out
    assert "rescued=1" in out
    assert _live_state(host) == before
    assert curl(host, "https://localhost/v1/models").status == 200


@pytest.fixture(scope="module")
def rsa_files(host):
    """An RSA certificate with its key, and a second key that does not belong to it."""
    with host.sudo():
        host.check_output(
            f"mkdir -p {FILES_DIR} && cd {FILES_DIR} && "
            "openssl req -x509 -newkey rsa:2048 -nodes -keyout server.key -out server.crt -days 90 "
            "-subj /CN=localhost -addext subjectAltName=DNS:localhost,DNS:clawbot.test 2>/dev/null && "
            "openssl genrsa -out other.key 2048 2>/dev/null && chmod 0600 server.key other.key")
    return {"nginx_tls_mode": "files", "nginx_tls_cert_file": f"{FILES_DIR}/server.crt",
            "nginx_tls_key_file": f"{FILES_DIR}/server.key"}


def test_files_mode_refuses_a_key_of_another_certificate(host, rsa_files):
    before = _live_state(host)
    run = converge({**rsa_files, "nginx_tls_key_file": f"{FILES_DIR}/other.key"})
    out = run.stdout + run.stderr
    assert run.returncode != 0, out[-3000:]
    assert f"{FILES_DIR}/server.crt and {FILES_DIR}/other.key: the key does not belong to the certificate." in out
    assert "No file nginx reads had been changed" in out
    assert _live_state(host) == before


def test_files_mode_serves_the_given_rsa_pair_with_aead_suites_only(host, rsa_files):
    run = converge(rsa_files)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    certs = curl(host, "https://localhost/v1/models").info["certs"]
    assert "Public Key Algorithm:rsaEncryption" in certs
    with host.sudo():
        served = host.check_output(f"openssl x509 -in {FILES_DIR}/server.crt -noout -serial").split("=")[1]
        site = host.file(SITE).content_string
    assert f"serial number:{served.lower()}" in certs.lower()
    assert f"ssl_certificate {FILES_DIR}/server.crt;" in site
    # The site names the certificate's serial: a renewed certificate in the file changes it.
    assert f"# Serial {int(served, 16)}, valid until " in site

    unit = tls_control_server(host, f"{FILES_DIR}/server.crt", f"{FILES_DIR}/server.key", port=4434)
    try:
        assert tls12_scan(host, 443) == EXPECTED_RSA_TLS12
        # Without forward secrecy (RSA key exchange) or without AEAD: the client and the control
        # server with the same certificate agree on them, nginx refuses them.
        for suite in ("AES128-SHA", "AES128-GCM-SHA256", "AES256-SHA256", "ECDHE-RSA-AES128-SHA",
                      "ECDHE-RSA-AES256-SHA384"):
            assert handshake(host, 4434, "-tls1_2", "-cipher", f"{suite}:@SECLEVEL=0"), f"control {suite}"
            assert handshake(host, 443, "-tls1_2", "-cipher", f"{suite}:@SECLEVEL=0") == "", suite
    finally:
        host.run(f"systemctl stop {unit}")
