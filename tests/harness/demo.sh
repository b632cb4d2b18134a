#!/usr/bin/env bash
# `make demo` / `make demo-destroy`: a throw-away systemd container that playbooks/site.yml is run
# against exactly as against a real host (inventories/local reaches it with the docker connection).
set -euo pipefail

action="${1:?usage: demo.sh up|destroy NAME IMAGE}"
name="${2:-clawbot-demo}"
image="${3:-clawbot/debian-systemd:12}"
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

if [ "$action" = destroy ]; then
  docker rm -f "$name" >/dev/null 2>&1 && echo "demo: removed $name" || echo "demo: no container $name"
  exit 0
fi

if [ -z "$(docker ps -q --filter "name=^${name}$")" ]; then
  docker rm -f "$name" >/dev/null 2>&1 || true
  echo "demo: starting systemd container $name from $image"
  bash "$here/systemd-container.sh" "$name" "$image"
else
  echo "demo: reusing running container $name"
fi

cd "$root"
# Without MODEL_BASE_URL the bot talks to an offline stand-in model server in the container.
playbooks=(playbooks/site.yml)
if [ -z "${MODEL_BASE_URL:-}" ]; then
  echo "demo: no MODEL_BASE_URL set: installing the offline STAND-IN model server (not a real model)"
  playbooks=(tests/harness/standin-model.yml "${playbooks[@]}")
  model="the offline STAND-IN model server on 127.0.0.1:18800 (replies start with 'standin-model:')"
else
  model="${MODEL_NAME:-?} at $MODEL_BASE_URL"
fi
ansible-playbook -i inventories/local "${playbooks[@]}"

# A fresh API token for this demo (shown once; older demo tokens stay valid until revoked).
token="$(docker exec "$name" clawbot-app token create --user demo --tenant demo --days 7 \
  --config /etc/clawbot/config.yaml 2>/dev/null)"
chat="docker exec $name curl -sk https://localhost/api/v1/chat -H 'Authorization: Bearer $token' -H 'Content-Type: application/json' -d '{\"message\": \"Hello, who are you?\"}'"
reply="$(eval "$chat" || true)"

# Prometheus' view right after the deploy: wait (bounded, 60 s) until every target is up; a
# service started after Prometheus (Alertmanager) is up at the next scrape.
targets="$(docker exec "$name" python3 -c '
import json, time, urllib.request
for _ in range(30):
    data = json.load(urllib.request.urlopen("http://127.0.0.1:9090/api/v1/targets", timeout=5))
    active = data["data"]["activeTargets"]
    if active and all(t["health"] == "up" for t in active):
        break
    time.sleep(2)
down = sorted(t["labels"]["job"] + "@" + t["labels"].get("host", "?") for t in active if t["health"] != "up")
print(f"{len(active) - len(down)} of {len(active)} up" + (" (down: " + ", ".join(down) + ")" if down else ""))
' 2>/dev/null || echo "unknown (Prometheus did not answer)")"

# Backups: the timer and what each repository holds (the deploy ran the first backup).
backups="$(docker exec "$name" python3 -c '
import json, subprocess, time
timers = ["clawbot-backup.timer", "clawbot-backup-check.timer"]
out = subprocess.run(["systemctl", "list-timers", "--no-pager", "--all"] + timers,
                     capture_output=True, text=True, check=True).stdout.strip().splitlines()
print("\n".join("  " + line for line in out[:3]))
status = subprocess.run(["clawbot-backup", "status"], capture_output=True, text=True, check=True).stdout
for r in json.loads(status):
    ok = r.get("last_success") or 0
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ok)) if ok else "never"
    print("  repository %s (%s): %s snapshots, last success %s" % (r["name"], r["repository"], r.get("snapshots", 0), when))
' 2>/dev/null || echo "  unknown (clawbot-backup did not answer)")"

cat <<EOT

demo: the stack is deployed on the container '$name'.
  nginx (TLS, self-signed) on 443 -> clawbot-app on 127.0.0.1:18789 -> $model
  Redis (unix socket) and MariaDB (unix socket) on the same container; ufw allows 22, 80, 443.

Talk to the bot (a token valid for 7 days was just created for you):
  $chat

  answer just now: $reply

  continue the conversation: add "session_id" from the answer to the JSON body.
  more tokens:         docker exec $name clawbot-app token create --user NAME --config /etc/clawbot/config.yaml
  what runs there:     docker exec $name systemctl --no-pager list-units --type=service --state=running
  the bot's log:       docker exec $name journalctl -u clawbot-app -o cat -n 20
  firewall:            docker exec $name ufw status verbose
  MariaDB (root, unix socket only):  docker exec $name mariadb -e 'SHOW DATABASES'
  Redis (ACL user admin; password in .cache/demo-secrets/, never on a command line):
                       docker exec -i $name sh -c 'REDISCLI_AUTH=\$(cat) redis-cli --user admin INFO keyspace' < .cache/demo-secrets/redis-admin

Monitoring (Prometheus, Alertmanager and the alert relay listen on the container's loopback only):
  Prometheus targets just now: $targets
  targets:             docker exec $name curl -s http://127.0.0.1:9090/api/v1/targets
  alerts firing:       docker exec $name amtool --alertmanager.url=http://127.0.0.1:9093 alert query
  a browser:           ssh -L 9090:127.0.0.1:9090 -L 9093:127.0.0.1:9093 USER@HOST on a real host, then
                       http://localhost:9090 and http://localhost:9093 (this container has no sshd:
                       use docker exec as above)
  group chat alerts:   set alertmanager_robots (DingTalk/Feishu/WeCom robots) in
                       inventories/local/group_vars/monitoring_servers.yml and run make demo again

Backups (restic; daily at 03:00 plus a random delay, weekly restic check --read-data-subset):
$backups
  back up now:         docker exec $name systemctl start clawbot-backup.service
  snapshots:           docker exec $name clawbot-backup snapshots --repository local
  restore drill:       ansible-playbook -i inventories/local playbooks/restore_drill.yml
  the repository password: .cache/demo-secrets/backup-local (keep it off the host: without it the
                       backups cannot be read)

  a shell:             docker exec -it $name bash
  converge again:      make demo            (idempotent: second run reports changed=0)
  remove it:           make demo-destroy
EOT
case "$reply" in
  *'"reply"'*) ;;
  *) echo "demo: the chat request above did not return a reply" >&2; exit 1 ;;
esac
