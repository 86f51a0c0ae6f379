#!/usr/bin/env bash
# Install ORCH-Next's systemd services on this host, following the operations guide's "Production
# Installation": the system user orch-next, the directories it writes, /etc/orch-next/config.yaml and
# /etc/orch-next/orch-next.env (secrets; both mode 0600, owned by orch-next), the units and the
# logrotate file. Safe to run again: it creates what is missing, fixes modes and owners, never
# overwrites a config or secrets file, and prints one line per item. It enables and starts nothing;
# its last lines say what to enable on this host.
#
#   sudo infra/systemd/install.sh            install into / (the checkout and .venv live in /opt/orch-next)
#   infra/systemd/install.sh --root DIR      stage into DIR (an image, a chroot, a test); the user is
#                                            created only in DIR/etc/passwd, and only as root
set -euo pipefail

SERVICE_USER=orch-next
APP_DIR=/opt/orch-next
CONF_DIR=/etc/orch-next
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
ROOT=""

fail() { echo "error: $*" >&2; exit 2; }
say() { printf '%-9s %s\n' "$1" "$2"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --root) [ $# -ge 2 ] || fail "--root needs a directory"; ROOT="$2"; shift 2 ;;
    --root=*) ROOT="${1#--root=}"; shift ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) fail "unknown argument $1 (see --help)" ;;
  esac
done
if [ -n "$ROOT" ]; then
  [ -d "$ROOT" ] || fail "--root $ROOT is not a directory"
  ROOT="$(cd "$ROOT" && pwd)"
fi
AS_ROOT=false
[ "$(id -u)" -eq 0 ] && AS_ROOT=true
$AS_ROOT || [ -n "$ROOT" ] || fail "run as root (sudo $0), or stage into a directory with --root DIR"

# --- the service user -------------------------------------------------------------------------------
PASSWD="$ROOT/etc/passwd"
has_user() { [ -f "$PASSWD" ] && grep -q "^$SERVICE_USER:" "$PASSWD"; }
if has_user; then
  say exists "user $SERVICE_USER"
elif ! $AS_ROOT; then
  say skipped "user $SERVICE_USER (needs root; files keep your ownership)"
elif [ ! -f "$PASSWD" ]; then
  say skipped "user $SERVICE_USER ($PASSWD does not exist)"
else
  prefix=()
  [ -n "$ROOT" ] && prefix=(--prefix "$ROOT")
  useradd --system --user-group --shell /usr/sbin/nologin --home-dir "$APP_DIR" --no-create-home \
    "${prefix[@]}" "$SERVICE_USER"
  say created "user $SERVICE_USER"
fi
# Owners are numeric ids from $ROOT/etc/passwd, so a staged root never depends on the build host's users.
SERVICE_IDS=""
if $AS_ROOT && has_user; then
  SERVICE_IDS="$(awk -F: -v user="$SERVICE_USER" '$1 == user { print $3 ":" $4 }' "$PASSWD")"
fi

# --- helpers: each prints created / updated / fixed / unchanged -------------------------------------
owner_ids() {  # service | root-group | root  ->  uid:gid, or "" when owners are not managed here
  [ -n "$SERVICE_IDS" ] || { echo ""; return; }
  case "$1" in
    service) echo "$SERVICE_IDS" ;;
    root-group) echo "0:${SERVICE_IDS#*:}" ;;
    root) echo "0:0" ;;
  esac
}

owner_name() {
  case "$1" in service) echo "$SERVICE_USER" ;; root-group) echo "root:$SERVICE_USER" ;; root) echo root ;; esac
}

fix_attrs() {  # path mode owner state label  ->  prints the final state
  local path="$1" mode="$2" ids state="$4"
  ids="$(owner_ids "$3")"
  if [ "$(stat -c %a "$path")" != "$mode" ]; then
    chmod "$mode" "$path"
    [ "$state" = unchanged ] && state=fixed
  fi
  if [ -n "$ids" ] && [ "$(stat -c %u:%g "$path")" != "$ids" ]; then
    chown "$ids" "$path"
    [ "$state" = unchanged ] && state=fixed
  fi
  say "$state" "$5 (mode $mode${ids:+, owner $(owner_name "$3")})"
}

ensure_dir() {  # dir mode owner
  local path="$ROOT$1" state=unchanged
  [ -d "$path" ] || { mkdir -p "$path"; state=created; }
  fix_attrs "$path" "$2" "$3" "$state" "$1/"
}

place() {  # src dest mode owner keep|sync: keep never replaces an existing file, sync replaces a changed one
  local src="$1" dest="$ROOT$2" state=unchanged tmp ids
  if [ -e "$dest" ] && { [ "$5" = keep ] || cmp -s "$src" "$dest"; }; then
    :
  else
    [ -e "$dest" ] && state=updated || state=created
    tmp="$(dirname "$dest")/.$(basename "$dest").tmp.$$"
    (umask 077 && cp "$src" "$tmp")  # never readable by others, not even for a moment
    chmod "$3" "$tmp"
    ids="$(owner_ids "$4")"
    [ -z "$ids" ] || chown "$ids" "$tmp"
    mv -f "$tmp" "$dest"
  fi
  fix_attrs "$dest" "$3" "$4" "$state" "$2"
}

# --- directories, configuration, secrets --------------------------------------------------------------
ensure_dir "$APP_DIR" 755 service  # the guide: the checkout belongs to the service user
ensure_dir "$APP_DIR/data" 750 service
ensure_dir "$APP_DIR/data/logs" 750 service
ensure_dir "$APP_DIR/logs" 750 service
ensure_dir "$CONF_DIR" 750 root-group
place "$SRC/config/production.yaml.example" "$CONF_DIR/config.yaml" 600 service keep
place "$SRC/infra/orch-next.env.example" "$CONF_DIR/orch-next.env" 600 service keep

# The Prefect server's auth string, made once: the server reads it from prefect-server.env
# (PREFECT_SERVER_API_AUTH_STRING), the ORCH services send it from orch-next.env (PREFECT_API_AUTH_STRING,
# filled in only while that line is still empty). Never printed; an existing file is never replaced.
prefect_env="$ROOT$CONF_DIR/prefect-server.env"
if [ -e "$prefect_env" ]; then
  fix_attrs "$prefect_env" 600 service unchanged "$CONF_DIR/prefect-server.env"
else
  auth="orch:$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
  tmp="$(dirname "$prefect_env")/.prefect-server.env.tmp.$$"
  (umask 077 && printf '%s\n' "# Prefect server settings (see infra/multi-host/prefect-server.env.example)." \
    "PREFECT_SERVER_API_AUTH_STRING=$auth" > "$tmp")
  mv -f "$tmp" "$prefect_env"
  fix_attrs "$prefect_env" 600 service created "$CONF_DIR/prefect-server.env"
  env_file="$ROOT$CONF_DIR/orch-next.env"
  if grep -q '^PREFECT_API_AUTH_STRING=$' "$env_file"; then
    tmp="$(dirname "$env_file")/.orch-next.env.tmp.$$"
    (umask 077 && sed "s|^PREFECT_API_AUTH_STRING=\$|PREFECT_API_AUTH_STRING=$auth|" "$env_file" > "$tmp")
    mv -f "$tmp" "$env_file"
    fix_attrs "$env_file" 600 service updated "$CONF_DIR/orch-next.env (PREFECT_API_AUTH_STRING: the same string)"
  fi
fi

# The guide runs its scripts from the checkout (cron: /opt/orch-next/.venv/bin/python scripts/...); ORCH
# reads <ORCH_HOME>/.env, so this link gives them the service's config path and secrets (readable by
# root and orch-next only).
link="$ROOT$APP_DIR/.env"
if [ -L "$link" ] && [ "$(readlink "$link")" = "$CONF_DIR/orch-next.env" ]; then
  say unchanged "$APP_DIR/.env -> $CONF_DIR/orch-next.env"
elif [ -e "$link" ] || [ -L "$link" ]; then
  say kept "$APP_DIR/.env (an existing file; ORCH reads it instead of $CONF_DIR/orch-next.env)"
else
  ln -s "$CONF_DIR/orch-next.env" "$link"
  say created "$APP_DIR/.env -> $CONF_DIR/orch-next.env"
fi

# --- units and logrotate -----------------------------------------------------------------------------
ensure_dir /etc/systemd/system 755 root
for unit in "$SRC"/infra/systemd/*.service "$SRC"/infra/systemd/*.target; do
  place "$unit" "/etc/systemd/system/$(basename "$unit")" 644 root sync
done
ensure_dir /etc/logrotate.d 755 root
place "$SRC/infra/logrotate/orch-next" /etc/logrotate.d/orch-next 644 root sync

if [ -z "$ROOT" ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  say reloaded "systemd units"
fi

[ -x "$ROOT$APP_DIR/.venv/bin/python" ] || echo "note: $APP_DIR/.venv is missing: put the checkout in $APP_DIR and run" \
  "python3 -m venv $APP_DIR/.venv && $APP_DIR/.venv/bin/pip install --require-hashes --no-deps -r $APP_DIR/requirements.lock && $APP_DIR/.venv/bin/pip install --no-deps --no-build-isolation -e $APP_DIR"
cat <<EOF

Next: set the secrets in $CONF_DIR/orch-next.env and check $CONF_DIR/config.yaml
  (sudo -u $SERVICE_USER $APP_DIR/.venv/bin/orch config validate $CONF_DIR/config.yaml), then
  one host:       systemctl enable --now orch-next.target
  several hosts:  systemctl enable --now orch-next-worker.service   (and/or orch-next-api.service,
                  orch-next-prefect-server.service, orch-next-deployments.service on one host)
  logs:           journalctl -u 'orch-next-*' -f
EOF
