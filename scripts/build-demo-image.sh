#!/usr/bin/env bash
# Build the demo images landlord/demo-app:<version> and push them to the local registry.
#
# Usage: scripts/build-demo-image.sh [--force] [--no-push] [-v] [VERSION ...]
#                                     (default versions: 1.0.0 1.1.0 2.0.0)
#        scripts/build-demo-image.sh --print-mirror   (show the mirror a cold build would use)
#
# How it works
#   1. Base image landlord/debian-base:<hash>: a Debian bookworm minbase root
#      filesystem made by debootstrap with python3-minimal + libpython3-stdlib,
#      trimmed (docs, man pages, locales, apt caches) and `docker import`ed.
#      <hash> covers the suite, the package list and BASE_RECIPE below, so the
#      base is rebuilt only when those change.
#   2. Each version image = base + examples/demo-app/app.py at /app/app.py, made
#      with `docker create` + `docker cp` + `docker commit --change` (no RUN steps,
#      no BuildKit needed), with ENV VERSION=<version>, CMD python3 /app/app.py
#      and labels org.opencontainers.image.version and landlord.demo.inputs
#      (hash of app.py + base image id + recipe + version). An image whose label
#      matches is kept; a rebuilt one replaces the tag and the old image is
#      removed when nothing else uses it.
#   3. Each version is pushed as $LANDLORD_REGISTRY/landlord/demo-app:<version>
#      (LANDLORD_REGISTRY defaults to 127.0.0.1:5000, the registry scripts/services.sh
#      starts; Docker pushes to loopback registries over plain HTTP). A push is skipped
#      when the registry's tag already names the digest Docker recorded for the image
#      (its RepoDigests), so warm runs make one HEAD request per version. The image
#      keeps both tags (local and registry), and its RepoDigest lets Docker run
#      NAME@DIGEST without a pull. --no-push skips this step.
#
# Package mirror: read at run time from this machine's apt configuration (deb822
# /etc/apt/sources.list.d/*.sources `URIs:` of the stanza whose Suites hold
# "bookworm", else `deb` lines of /etc/apt/sources.list{,.d/*.list}); the
# DEBIAN_MIRROR environment variable overrides it, APT_DIR (default /etc/apt)
# moves the search. Only needed on a cold build.
#
# Cache (run state, outside the repo): ${LANDLORD_DEV_STATE:-/var/lib/landlord-dev}/demo-image/
#   debian-base-<hash>.tar.gz  the trimmed rootfs; re-imported without debootstrap
#                              if the base image was removed from Docker
#   debootstrap.log            output of the last debootstrap
#   lock                       flock: concurrent runs wait for one builder
# Warm runs (nothing changed) only inspect images and take well under 2 s.
set -euo pipefail

SUITE=bookworm
PACKAGES=python3-minimal,libpython3-stdlib
BASE_RECIPE=1          # bump when the debootstrap/trim steps below change
IMAGE_RECIPE=1         # bump when the version-image recipe changes
BASE_REPO=landlord/debian-base
APP_REPO=landlord/demo-app
DEFAULT_VERSIONS=(1.0.0 1.1.0 2.0.0)
REGISTRY=${LANDLORD_REGISTRY:-127.0.0.1:5000}
MANIFEST_ACCEPT="application/vnd.docker.distribution.manifest.v2+json,\
application/vnd.docker.distribution.manifest.list.v2+json,\
application/vnd.oci.image.manifest.v1+json,application/vnd.oci.image.index.v1+json"

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
APP_FILE=$REPO_ROOT/examples/demo-app/app.py
CACHE_DIR=${LANDLORD_DEV_STATE:-/var/lib/landlord-dev}/demo-image

force=0
push=1
verbose=0
print_mirror=0
versions=()

say() { echo "build-demo-image: $*" >&2; }
die() { say "error: $*"; exit 1; }

usage() { sed -n '2,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

for arg in "$@"; do
    case $arg in
        -h|--help) usage; exit 0 ;;
        -f|--force) force=1 ;;
        --no-push) push=0 ;;
        -v|--verbose) verbose=1 ;;
        --print-mirror) print_mirror=1 ;;
        -*) die "unknown option $arg (see --help)" ;;
        *)
            [[ $arg =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] \
                || die "version '$arg' is not a valid Docker tag"
            versions+=("$arg") ;;
    esac
done
[[ ${#versions[@]} -gt 0 ]] || versions=("${DEFAULT_VERSIONS[@]}")

command -v docker >/dev/null || die "docker CLI not found"
[[ -f $APP_FILE ]] || die "missing $APP_FILE"

sha() { sha256sum | cut -c1-16; }

base_hash=$(printf 'suite=%s\npackages=%s\nrecipe=%s\n' "$SUITE" "$PACKAGES" "$BASE_RECIPE" | sha)
BASE_TAG=$BASE_REPO:$base_hash
BASE_TARBALL=$CACHE_DIR/debian-base-$base_hash.tar.gz
app_hash=$(sha <"$APP_FILE")

image_id() { docker image inspect -f '{{ .Id }}' "$1" 2>/dev/null || true; }

base_id=$(image_id "$BASE_TAG")   # the inputs name the base image id: a re-import rebuilds

inputs_for() { printf 'app=%s\nbase=%s\nrecipe=%s\nversion=%s\n' \
    "$app_hash" "$base_id" "$IMAGE_RECIPE" "$1" | sha; }

label_of() {
    docker image inspect -f '{{ index .Config.Labels "landlord.demo.inputs" }}' "$1" 2>/dev/null || true
}

# Mirror for the main bookworm suite from apt's configuration.
find_mirror() {
    if [[ -n ${DEBIAN_MIRROR:-} ]]; then echo "$DEBIAN_MIRROR"; return; fi
    local f
    local apt=${APT_DIR:-/etc/apt}
    for f in "$apt"/sources.list.d/*.sources; do
        [[ -f $f ]] || continue
        awk -v suite="$SUITE" '
            function flush() {
                if (types ~ /(^| )deb( |$)/ && enabled != "no" && uris != "") {
                    n = split(suites, s, " ")
                    for (i = 1; i <= n; i++) if (s[i] == suite) { split(uris, u, " "); print u[1]; found = 1; exit }
                }
                types = ""; suites = ""; uris = ""; enabled = ""
            }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            {
                key = tolower($1); sub(/:$/, "", key); val = $0; sub(/^[^:]*:[ \t]*/, "", val)
                if (key == "types") types = val
                else if (key == "uris") uris = val
                else if (key == "suites") suites = val
                else if (key == "enabled") enabled = tolower(val)
            }
            END { if (!found) flush() }
        ' "$f" | head -n1 | grep . && return
    done
    for f in "$apt"/sources.list "$apt"/sources.list.d/*.list; do
        [[ -f $f ]] || continue
        # deb [options] URI SUITE COMPONENTS...
        sed -E 's/\[[^]]*\]//' "$f" | awk -v suite="$SUITE" \
            '$1 == "deb" && $3 == suite { print $2; exit }' | grep . && return
    done
    return 1
}

mirror_or_die() {
    local m
    m=$(find_mirror) || die "no Debian mirror for '$SUITE' in ${APT_DIR:-/etc/apt}/sources.list.d/*.sources \
or ${APT_DIR:-/etc/apt}/sources.list; set DEBIAN_MIRROR"
    echo "${m%/}"
}

if [[ $print_mirror == 1 ]]; then mirror_or_die; exit 0; fi

# Fast path: everything present and current -> no lock, no work.
stale=()
if [[ -n $base_id ]]; then
    for v in "${versions[@]}"; do
        if [[ $force == 1 || $(label_of "$APP_REPO:$v") != "$(inputs_for "$v")" ]]; then
            stale+=("$v")
        fi
    done
else
    stale=("${versions[@]}")
fi

# The digest the registry's tag names now ("" if none or unreachable).
registry_digest() {
    curl -sS --max-time 5 -o /dev/null -D - -I -H "Accept: $MANIFEST_ACCEPT" \
        "http://$REGISTRY/v2/$APP_REPO/manifests/$1" 2>/dev/null \
        | awk 'tolower($1) == "docker-content-digest:" { sub(/\r$/, "", $2); print $2 }'
}

# Whether the registry's tag already names the image's pushed digest.
pushed() {
    local v=$1 digest
    digest=$(registry_digest "$v")
    [[ -n $digest ]] || return 1
    docker image inspect -f '{{ range .RepoDigests }}{{ println . }}{{ end }}' "$APP_REPO:$v" \
        2>/dev/null | grep -qxF "$REGISTRY/$APP_REPO@$digest"
}

push_versions() {
    [[ $push == 1 ]] || return 0
    curl -sS --max-time 5 -o /dev/null "http://$REGISTRY/v2/" 2>/dev/null \
        || die "registry $REGISTRY does not answer (start it: scripts/services.sh up; or --no-push)"
    local v remote
    for v in "${versions[@]}"; do
        pushed "$v" && continue
        remote=$REGISTRY/$APP_REPO:$v
        say "pushing $remote"
        docker tag "$APP_REPO:$v" "$remote"
        docker push -q "$remote" >/dev/null || die "docker push $remote failed"
        pushed "$v" || die "pushed $remote, but the registry's digest is not the image's"
    done
}

if [[ ${#stale[@]} -eq 0 ]]; then
    push_versions
    [[ $verbose == 0 ]] || say "up to date: ${versions[*]/#/$APP_REPO:} on $BASE_TAG"
    exit 0
fi

mkdir -p "$CACHE_DIR"
exec 9>"$CACHE_DIR/lock"
if ! flock -n 9; then
    say "another build holds $CACHE_DIR/lock; waiting"
    flock -w 1800 9 || die "timed out waiting for $CACHE_DIR/lock"
fi

workdir=""
temp_container=""
cleanup() {
    if [[ -n $temp_container ]]; then docker rm -f "$temp_container" >/dev/null 2>&1 || true; fi
    if [[ -n $workdir && -d $workdir ]]; then
        # debootstrap may leave proc/sys mounted inside the target on failure
        local m
        while read -r m; do
            umount -l "$m" || true
        done < <( (findmnt -rn -o TARGET || true) | grep -F "$workdir/" | sort -r || true)
        rm -rf --one-file-system "$workdir" || true
    fi
}
trap cleanup EXIT

build_base_tarball() {
    command -v debootstrap >/dev/null || die "debootstrap not installed (apt-get install debootstrap)"
    [[ $(id -u) == 0 ]] || die "debootstrap needs root"
    local mirror
    mirror=$(mirror_or_die)
    workdir=$(mktemp -d "$CACHE_DIR/build.XXXXXX")
    local rootfs=$workdir/rootfs
    say "debootstrap $SUITE (minbase + $PACKAGES) from $mirror; log: $CACHE_DIR/debootstrap.log"
    local start=$SECONDS
    if ! debootstrap --variant=minbase --include="$PACKAGES" --components=main \
            "$SUITE" "$rootfs" "$mirror" >"$CACHE_DIR/debootstrap.log" 2>&1; then
        tail -n 20 "$CACHE_DIR/debootstrap.log" >&2
        die "debootstrap failed (full log: $CACHE_DIR/debootstrap.log)"
    fi
    say "debootstrap done in $((SECONDS - start)) s; trimming"
    rm -rf "$rootfs"/usr/share/{doc,man,info,locale,lintian}/* \
        "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/* \
        "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/lib/dpkg/*-old \
        "$rootfs"/var/log/* "$rootfs"/tmp/* "$rootfs"/root/.cache
    find "$rootfs" -depth -name __pycache__ -type d -exec rm -rf {} +
    tar --numeric-owner -C "$rootfs" -czf "$workdir/rootfs.tar.gz" .
    mv "$workdir/rootfs.tar.gz" "$BASE_TARBALL"
    say "cached rootfs $BASE_TARBALL ($(du -h "$BASE_TARBALL" | cut -f1))"
}

ensure_base() {
    base_id=$(image_id "$BASE_TAG")
    [[ -z $base_id ]] || return 0
    [[ -f $BASE_TARBALL ]] || build_base_tarball
    say "importing $BASE_TAG"
    docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["/bin/sh"]' \
        --change "LABEL landlord.base.inputs=$base_hash" \
        --change "LABEL org.opencontainers.image.description=\"Debian $SUITE minbase + $PACKAGES\"" \
        --message "debootstrap $SUITE minbase + $PACKAGES" \
        "$BASE_TARBALL" "$BASE_TAG" >/dev/null
    base_id=$(image_id "$BASE_TAG")
}

build_version() {
    local v=$1 inputs
    inputs=$(inputs_for "$v")
    if [[ $force == 0 && $(label_of "$APP_REPO:$v") == "$inputs" ]]; then return; fi
    say "building $APP_REPO:$v"
    [[ -n $workdir ]] || workdir=$(mktemp -d "$CACHE_DIR/build.XXXXXX")
    rm -rf "$workdir/app" && mkdir -p "$workdir/app" && cp "$APP_FILE" "$workdir/app/app.py"
    chmod 0755 "$workdir/app" && chmod 0644 "$workdir/app/app.py"
    local previous
    previous=$(image_id "$APP_REPO:$v")
    temp_container=$(docker create "$BASE_TAG" /bin/true)
    docker cp "$workdir/app" "$temp_container:/app"
    docker commit \
        --change "ENV VERSION=$v" \
        --change 'ENV PYTHONUNBUFFERED=1' \
        --change 'ENV PYTHONDONTWRITEBYTECODE=1' \
        --change 'WORKDIR /app' \
        --change 'CMD ["python3", "/app/app.py"]' \
        --change "LABEL org.opencontainers.image.version=$v" \
        --change 'LABEL org.opencontainers.image.title=landlord-demo-app' \
        --change "LABEL landlord.demo.inputs=$inputs" \
        --change "LABEL landlord.demo.base=$BASE_TAG@$base_id" \
        --message "landlord demo app $v" \
        "$temp_container" "$APP_REPO:$v" >/dev/null
    docker rm "$temp_container" >/dev/null
    temp_container=""
    # drop the superseded image unless a container or another tag still uses it
    [[ -z $previous ]] || docker rmi "$previous" >/dev/null 2>&1 || true
}

ensure_base
for v in "${stale[@]}"; do build_version "$v"; done
push_versions
say "ready: ${versions[*]/#/$APP_REPO:} ($(docker image inspect -f '{{ .Size }}' "$APP_REPO:${versions[0]}" \
    | awk '{ printf "%.0f MB", $1 / 1e6 }'))"
