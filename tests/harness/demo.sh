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
ansible-playbook -i inventories/local playbooks/site.yml

cat <<EOT

demo: the stack is deployed on the container '$name'.
  what runs there:     docker exec $name systemctl --no-pager list-units --type=service --state=running
  firewall:            docker exec $name ufw status verbose
  ssh hardening:       docker exec $name sshd -T
  MariaDB (root, unix socket only):  docker exec $name mariadb -e 'SHOW DATABASES'
  Redis (ACL user admin; password in .cache/demo-secrets/, never on a command line):
                       docker exec -i $name sh -c 'REDISCLI_AUTH=\$(cat) redis-cli --user admin INFO keyspace' < .cache/demo-secrets/redis-admin
  a shell:             docker exec -it $name bash
  converge again:      make demo            (idempotent: second run reports changed=0)
  remove it:           make demo-destroy
EOT
