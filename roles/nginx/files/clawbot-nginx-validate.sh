#!/bin/sh
# Installed by the clawbot.stack.nginx role as /usr/local/sbin/clawbot-nginx-validate.
#
# clawbot-nginx-validate LIVE_FILE CANDIDATE
#
# Tests CANDIDATE as the new version of LIVE_FILE (a file under /etc/nginx) before it replaces
# it: the live configuration directory is copied to a private temporary directory, CANDIDATE
# is put where LIVE_FILE is in the copy, absolute references into /etc/nginx (include paths,
# symlinks) are pointed at the copy, and `nginx -T` tests the copy's nginx.conf. Exits 0 only
# when nginx accepts the whole configuration AND it loaded the candidate (a file that no include
# reaches would otherwise pass untested). The live directory is never touched.
# Used as the template tasks' `validate:` command; errors name the live path.
set -eu

conf_dir=/etc/nginx
main=nginx.conf
me=clawbot-nginx-validate

usage() {
    echo "usage: $me LIVE_FILE CANDIDATE (LIVE_FILE under $conf_dir/)" >&2
    exit 2
}

[ "$#" -eq 2 ] || usage
live=$1
candidate=$2
case $live in
    "$conf_dir"/?*) ;;
    *) usage ;;
esac
if [ ! -f "$candidate" ]; then
    echo "$me: the candidate $candidate is not a file" >&2
    exit 2
fi
rel=${live#"$conf_dir"/}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/clawbot-nginx-validate.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM
root=$tmp/nginx

cp -a "$conf_dir" "$root"
mkdir -p "$(dirname "$root/$rel")"
rm -f "$root/$rel"
cp "$candidate" "$root/$rel"

# Symlinks into the live directory point into the copy instead.
find "$root" -type l | while IFS= read -r link; do
    target=$(readlink "$link")
    case $target in
        "$conf_dir"/*) ln -sfn "$root/${target#"$conf_dir"/}" "$link" ;;
    esac
done
# So do absolute paths in the files (include directives and the like; symlinks are skipped).
grep -rlIZ -F -- "$conf_dir/" "$root" | xargs -0 -r sed -i "s|$conf_dir/|$root/|g"

# -T: test, then dump every file nginx read, each after a "# configuration file PATH:" line.
if ! nginx -T -q -c "$root/$main" >"$tmp/dump" 2>"$tmp/errors"; then
    sed "s|$root/|$conf_dir/|g" "$tmp/errors" >&2
    echo "$me: nginx refused the configuration with the candidate for $live" >&2
    exit 1
fi
if ! grep -qxF "# configuration file $root/$rel:" "$tmp/dump"; then
    echo "$me: nginx did not read the candidate for $live (no include reaches it): not tested" >&2
    exit 1
fi
