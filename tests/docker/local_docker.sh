#!/usr/bin/env bash
# A Docker daemon and a small task image on this machine, for the tests that run tasks in their own image
# (tests/test_docker_task_env.py) and for trying `sandbox: docker` or `--backend swebench` without a registry:
#
#   tests/docker/local_docker.sh start    # install docker.io + debootstrap if missing, start dockerd if not running
#   tests/docker/local_docker.sh image    # print the test image's tag, building it once (cached by tag)
#   tests/docker/local_docker.sh status   # daemon and image
#   tests/docker/local_docker.sh stop     # stop the daemon, only if `start` started it
#
# Needs root on Debian 12 or Ubuntu; no systemd is needed, dockerd is started directly. It runs with
# --bridge=none (containers get no network, whatever they ask) and --init (a container stops at once on
# `docker stop`, which swebench's harness calls for every instance, instead of after 15 s).
#
# No image registry is reachable, so the image is made from Debian's own archive: debootstrap (minbase, the
# mirror of the host's apt sources) with python3, pytest, git and patch, imported with `docker import`. The
# tag is a hash of what goes in, so a changed package list builds a new image and an unchanged one is reused
# across runs (the daemon's store outlives `stop`). Java (a JDK and JUnit 4) would triple the build, so the
# image serves the Python tasks only.
set -euo pipefail

STATE_DIR=${LOCAL_DOCKER_STATE:-/var/lib/repairrl-local-docker}
READY_TIMEOUT_S=${LOCAL_DOCKER_READY_TIMEOUT_S:-60}
SUITE=${LOCAL_DOCKER_SUITE:-bookworm}
PACKAGES=python3,python3-pytest,git,patch,ca-certificates
IMAGE_REPO=repairrl-task-base
IMAGE_RECIPE_VERSION=1  # raise when the recipe below changes in a way the package list does not show

log() { printf 'local_docker: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

require_root() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (it installs docker.io and starts dockerd)"
}

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "$@" >/dev/null; then
        apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null
        apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "$@" >/dev/null
    fi
}

install_packages() {
    local missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    ((${#missing[@]})) || return 0
    log "installing ${missing[*]}"
    apt_install "${missing[@]}"
}

daemon_up() {
    docker info >/dev/null 2>&1
}

start() {
    require_root
    install_packages
    if daemon_up; then
        log "dockerd already running"
        return
    fi
    mkdir -p "$STATE_DIR"
    # setsid: the daemon must not die with the shell (or the pytest session) that started it.
    setsid dockerd --bridge=none --init --iptables=false --ip-masq=false \
        --pidfile "$STATE_DIR/dockerd.pid" >"$STATE_DIR/dockerd.log" 2>&1 </dev/null &
    echo $! >"$STATE_DIR/started-by-us"
    local deadline=$((SECONDS + READY_TIMEOUT_S))
    until daemon_up; do
        if ! kill -0 "$(cat "$STATE_DIR/started-by-us")" 2>/dev/null; then
            tail -n 20 "$STATE_DIR/dockerd.log" >&2 || true
            rm -f "$STATE_DIR/started-by-us"
            die "dockerd exited at start-up (log above)"
        fi
        ((SECONDS < deadline)) || die "dockerd did not answer within ${READY_TIMEOUT_S} s; see $STATE_DIR/dockerd.log"
        sleep 0.2
    done
    log "dockerd ready ($(docker info --format '{{.Driver}}, cgroup v{{.CgroupVersion}}'))"
}

mirror() {
    # The first Debian archive the host's apt uses (deb822 or one-line sources), so the image gets the packages
    # the host can reach.
    local uri
    uri=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' \
        | grep -v -- '-security' | head -n 1 || true)
    if [[ -z $uri ]]; then
        uri=$(grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
            | grep -v -- '-security' | awk '{print $2}' | head -n 1 || true)
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

image_tag() {
    printf '%s\n' "$SUITE" "$PACKAGES" "$IMAGE_RECIPE_VERSION" | sha256sum | cut -c1-12
}

image() {
    require_root
    daemon_up || die "dockerd is not running; run '$0 start' first"
    local tag
    tag="$IMAGE_REPO:$(image_tag)"
    if docker image inspect "$tag" >/dev/null 2>&1; then
        echo "$tag"
        return
    fi
    local started=$SECONDS rootfs
    mkdir -p "$STATE_DIR"
    rootfs=$(mktemp -d "$STATE_DIR/rootfs.XXXXXX")
    trap 'rm -rf "$rootfs"' RETURN
    log "building $tag: debootstrap $SUITE from $(mirror)"
    if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$(mirror)" \
        >"$STATE_DIR/debootstrap.log" 2>&1; then
        tail -n 20 "$STATE_DIR/debootstrap.log" >&2 || true
        die "debootstrap failed; see $STATE_DIR/debootstrap.log"
    fi
    # Nothing the tests need: apt's lists and caches, documentation. Smaller layers import faster.
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/usr/share/doc/* \
        "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
    tar --numeric-owner -C "$rootfs" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' - "$tag" >/dev/null
    log "built $tag in $((SECONDS - started)) s ($(docker image inspect --format '{{.Size}}' "$tag" | numfmt --to=iec))"
    echo "$tag"
}

stop() {
    require_root
    local marker=$STATE_DIR/started-by-us pid
    if [[ ! -s $marker ]]; then
        log "dockerd was not started by this script; left running"
        return
    fi
    pid=$(cat "$marker")
    # Containers first: a daemon stopped under running containers leaves their shims behind.
    docker ps -q | xargs -r docker rm --force >/dev/null 2>&1 || true
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$marker"
    log "stopped"
}

status() {
    if daemon_up; then
        echo "running: $(docker info --format '{{.ServerVersion}}, {{.Driver}}, cgroup v{{.CgroupVersion}}')"
        docker image ls "$IMAGE_REPO"
    else
        echo "not running"
        return 3
    fi
}

case ${1:-} in
    start) start ;;
    image) image ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 {start|image|stop|status}" >&2; exit 2 ;;
esac
