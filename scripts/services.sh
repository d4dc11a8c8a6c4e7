#!/usr/bin/env bash
# Install and start the real services Landlord runs on: Docker Engine, etcd,
# HAProxy and an image registry (the Distribution registry, package
# docker-registry) from Debian's packages. Idempotent; run as root on Debian 12.
# It also installs Prometheus (package prometheus) but never starts it: tests that need
# a Prometheus server start a private one (tests/support/prometheus_server.py). Likewise
# chromium and chromium-driver, for the web view's browser test (tests/e2e/test_web_view.py).
#
#   services.sh install   install missing Debian packages (apt-get update only if needed)
#   services.sh up        install, raise the datagram queue for request logs, then start
#                         dockerd, a single-node etcd and the registry if not running
#   services.sh down      stop only what `up` started (pid files under the run dir)
#   services.sh status    say what runs and who started it
#
# Run state lives in $LANDLORD_RUN_DIR (default: <repo>/.run): pid files, logs,
# etcd's data directory, and the registry's config (registry.yml) and storage
# (registry/). The registry listens on $LANDLORD_REGISTRY (default 127.0.0.1:5000),
# plain HTTP: Docker pushes to and pulls from loopback registries without TLS.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUN_DIR=${LANDLORD_RUN_DIR:-$ROOT/.run}
PID_DIR=$RUN_DIR/pids
LOG_DIR=$RUN_DIR/logs
ETCD_DATA=$RUN_DIR/etcd
ETCD_CLIENT=${LANDLORD_ETCD_CLIENT:-127.0.0.1:2379}
ETCD_PEER=${LANDLORD_ETCD_PEER:-127.0.0.1:2380}
REGISTRY=${LANDLORD_REGISTRY:-127.0.0.1:5000}
REGISTRY_DATA=$RUN_DIR/registry
REGISTRY_CONFIG=$RUN_DIR/registry.yml
DOCKER_SOCK=/var/run/docker.sock

PACKAGES=(docker.io etcd-server haproxy docker-registry systemd-container debootstrap iproute2 curl
  procps ca-certificates prometheus chromium chromium-driver wrk)

log() { printf '[services] %s\n' "$*"; }
die() { printf '[services] error: %s\n' "$*" >&2; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "must run as root (installs packages and starts dockerd)"; }

missing_packages() {
  local p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}

install() {
  local missing
  missing=$(missing_packages)
  [ -z "$missing" ] && return 0
  need_root
  log "installing: $(echo $missing | tr '\n' ' ')"
  apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >"$LOG_DIR/apt.log" 2>&1 \
    || { tail -20 "$LOG_DIR/apt.log" >&2; die "apt-get install failed (log: $LOG_DIR/apt.log)"; }
}

docker_up() { timeout 5 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }
etcd_up() { curl -fsS --max-time 2 "http://$ETCD_CLIENT/health" 2>/dev/null | grep -q '"health":"true"'; }
# The Distribution API root answers 200 (or 401 with auth) with this header.
registry_up() {
  curl -sS --max-time 2 -o /dev/null -D - "http://$REGISTRY/v2/" 2>/dev/null \
    | grep -qi '^docker-distribution-api-version: registry/2.0'
}

wait_for() {  # wait_for NAME SECONDS CHECK...
  local name=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@"; do
    [ $SECONDS -ge $deadline ] && die "$name did not come up within ${secs}s (logs: $LOG_DIR)"
    sleep 0.2
  done
}

# start_detached NAME CMD...: run a long-lived service in the background with its log and
# pid file. It keeps none of this shell's open files beyond stdio: a service started under
# `flock LOCK make ...` would otherwise hold the caller's lock for as long as it runs.
start_detached() {
  local name=$1; shift
  (
    for fd in /proc/$BASHPID/fd/*; do
      fd=${fd##*/}
      if [ "$fd" -gt 2 ] 2>/dev/null; then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
    exec nohup "$@"
  ) >"$LOG_DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$PID_DIR/$name.pid"
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_docker() {
  if docker_up; then return 0; fi
  need_root
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    log "starting docker.service"
    systemctl start docker
  else
    log "starting dockerd (no systemd here)"
    # A dockerd killed uncleanly leaves its pid file behind; it refuses to start
    # only if that pid is alive, so a stale file is harmless.
    # --bridge=none: no default docker0 bridge. Bridged instances join the
    # agent's own bridge network (bridge_network/bridge_subnet, created through
    # the API), and docker-proxy publishes their ports on the advertise address:
    # neither needs iptables, so --iptables=false --ip-masq=false stay (host
    # firewall rules: docs/security.md). Units that ask for host networking bind
    # loopback addresses. --live-restore: containers keep running while dockerd
    # restarts (static stability).
    start_detached dockerd dockerd --bridge=none --iptables=false --ip-masq=false --live-restore
  fi
  wait_for dockerd 60 docker_up
  log "dockerd is up"
}

start_etcd() {
  if etcd_up; then return 0; fi
  command -v etcd >/dev/null || die "etcd is not installed (run: $0 install)"
  mkdir -p "$ETCD_DATA"
  log "starting etcd on $ETCD_CLIENT (data: $ETCD_DATA)"
  start_detached etcd etcd --name landlord-dev --data-dir "$ETCD_DATA" \
    --listen-client-urls "http://$ETCD_CLIENT" --advertise-client-urls "http://$ETCD_CLIENT" \
    --listen-peer-urls "http://$ETCD_PEER" --initial-advertise-peer-urls "http://$ETCD_PEER" \
    --initial-cluster "landlord-dev=http://$ETCD_PEER" \
    --auto-compaction-mode revision --auto-compaction-retention 10000
  wait_for etcd 30 etcd_up
  log "etcd is up"
}

start_registry() {
  if registry_up; then return 0; fi
  command -v docker-registry >/dev/null || die "docker-registry is not installed (run: $0 install)"
  mkdir -p "$REGISTRY_DATA"
  # Written on every start so a changed LANDLORD_REGISTRY or run dir takes effect.
  cat >"$REGISTRY_CONFIG" <<EOF
# Written by scripts/services.sh; rewritten on each start.
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $REGISTRY_DATA
  delete:
    enabled: true
http:
  addr: $REGISTRY
EOF
  log "starting docker-registry on $REGISTRY (storage: $REGISTRY_DATA)"
  start_detached registry docker-registry serve "$REGISTRY_CONFIG"
  wait_for registry 30 registry_up
  log "registry is up"
}

tune_host() {
  # HAProxy sends one log datagram per request to the agent; the kernel default
  # queue of 10 datagrams drops lines under load (systemd hosts set 512).
  local q
  q=$(sysctl -n net.unix.max_dgram_qlen 2>/dev/null || echo 512)
  if [ "$q" -lt 512 ]; then
    need_root
    sysctl -qw net.unix.max_dgram_qlen=512 && log "net.unix.max_dgram_qlen: $q -> 512"
  fi
}

stop_pidfile() {  # stop_pidfile NAME
  local f="$PID_DIR/$1.pid" pid
  if alive "$f"; then
    pid=$(cat "$f")
    log "stopping $1 (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

status() {
  local name
  for name in dockerd etcd registry; do
    if alive "$PID_DIR/$name.pid"; then
      echo "$name: running (started by these scripts, pid $(cat "$PID_DIR/$name.pid"))"
    elif { [ $name = dockerd ] && docker_up; } || { [ $name = etcd ] && etcd_up; } \
        || { [ $name = registry ] && registry_up; }; then
      echo "$name: running (not started by these scripts)"
    else
      echo "$name: not running"
    fi
  done
}

mkdir -p "$PID_DIR" "$LOG_DIR"
case "${1:-up}" in
  install) install ;;
  up) install; tune_host; start_docker; start_etcd; start_registry ;;
  down) stop_pidfile registry; stop_pidfile etcd; stop_pidfile dockerd ;;
  status) status ;;
  *) die "usage: $0 install|up|down|status" ;;
esac
