#!/usr/bin/env bash
# A real Slurm run: start a one-node Slurm cluster from Debian's packages (slurm-wlm, munge) on
# this machine, then on a simulated 3-participant dataset
#   1. submit scripts/slurm/participant-array.sbatch as a 3-task array (the launcher is the
#      virtualenv's bids_harmonize instead of Singularity), and
#   2. run one participant level with --use-plugin and Nipype's SLURM plugin (every node an
#      sbatch job), and
#   3. stop such a run with SIGTERM while its first job waits in the queue: it must cancel it,
# check the outputs and the jobs' states, print the job table and the output listing, and stop
# the daemons and remove everything it made (also on failure or Ctrl-C).
#
#   bash .ci/slurm.sh
#
# Needs Linux, root (slurmd starts jobs as their user) and either the packages or apt access.
# Prints "SKIPPED: <reason>" and exits 0 when the packages cannot be installed or the daemons
# cannot start here (exit 1 instead with SLURM_CI_REQUIRE=1); exits 1 when a job fails or an
# output is missing.
# Environment (all optional):
#   SLURM_CI_VENV     virtualenv with the package and its simulate extra (default REPO/.venv)
#   SLURM_CI_PORT     slurmctld port; slurmd uses the next one (default 16817, off the usual
#                     6817 so a real Slurm on the machine is not disturbed)
#   SLURM_CI_REPORT   also write the listing as Markdown to this file
#   SLURM_CI_KEEP=1   keep the temporary folder (configuration, daemon and job logs, outputs)
#   SLURM_CI_REQUIRE=1  a Slurm that cannot be started is a failure, not a skip
#
# No slurmdbd (it needs a MySQL server), so sacct has no data: finished jobs are read from the
# jobcomp/filetxt log (one line per job) and, while they are recent, from `scontrol show job`.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SLURM_CI_VENV:-$REPO/.venv}"
CTLD_PORT="${SLURM_CI_PORT:-16817}"
REPORT="${SLURM_CI_REPORT:-}"
KEEP_TMP="${SLURM_CI_KEEP:-0}"
REQUIRE="${SLURM_CI_REQUIRE:-0}"
ARRAY_SCRIPT="$REPO/scripts/slurm/participant-array.sbatch"
RESOLUTION_ARGS=(--template-resolution 2) # the 2 mm template: the same steps on an eighth of the voxels
JOB_LIMIT_S=1200

START=$SECONDS
TMP=""
CHILD=""
FAILURES=()
export NIPYPE_NO_ET=1 PYTHONUNBUFFERED=1

log() { # to the terminal and, for the report, to TMP/steps.log
    local line
    line="$(printf '[slurm-ci %s %5ss] %s' "$(date +%H:%M:%S)" "$((SECONDS - START))" "$*")"
    echo "$line"
    [[ -z "$TMP" ]] || echo "$line" >>"$TMP/steps.log"
}
fail() {
    FAILURES+=("$*")
    log "CHECK FAILED: $*"
}
skip() {
    if [[ "$REQUIRE" == 1 ]]; then
        log "ERROR (SLURM_CI_REQUIRE=1): $*"
        exit 1
    fi
    echo "SKIPPED: $*"
    exit 0
}

# ----------------------------------------------------------------------------- the cluster
install_packages() {
    local missing=()
    for cmd in munged slurmctld slurmd sbatch scontrol sinfo; do
        command -v "$cmd" >/dev/null || missing+=("$cmd")
    done
    ((${#missing[@]} == 0)) && return 0
    command -v apt-get >/dev/null || skip "no ${missing[*]} and no apt-get to install slurm-wlm and munge"
    log "installing slurm-wlm and munge (missing: ${missing[*]})"
    # Debian's maintainer scripts would start the daemons through systemd/init; policy-rc.d 101
    # forbids that for this install (there is no init system in a container anyway).
    local policy=/usr/sbin/policy-rc.d had_policy=0
    [[ -e $policy ]] && had_policy=1
    if ((!had_policy)); then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
    fi
    local status=0
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends slurm-wlm munge; } \
        >"$TMP/apt.log" 2>&1 || status=$?
    ((had_policy)) || rm -f "$policy"
    ((status == 0)) || skip "apt-get install slurm-wlm munge failed (exit $status): $(tail -n 3 "$TMP/apt.log" | tr '\n' ' ')"
}

start_munge() {
    # A private munged (own key and socket) so that a site's munge is neither needed nor touched.
    # munged insists the socket's folders be searchable by everyone and the key be private.
    mkdir -p "$TMP/munge"
    chmod 755 "$TMP" "$TMP/munge"
    head -c 1024 /dev/urandom >"$TMP/munge/munge.key"
    chmod 400 "$TMP/munge/munge.key"
    munged --socket="$TMP/munge/socket" --key-file="$TMP/munge/munge.key" --pid-file="$TMP/munge/munged.pid" \
        --log-file="$TMP/munge/munged.log" --seed-file="$TMP/munge/munged.seed" >"$TMP/munge/start.log" 2>&1 ||
        skip "munged did not start: $(tail -n 2 "$TMP/munge/munged.log" "$TMP/munge/start.log" | tr '\n' ' ')"
}

write_slurm_conf() {
    local node hardware
    node="$(hostname -s)"
    # slurmd -C: this machine's CPUs, sockets, cores and memory as slurmd will detect them.
    hardware="$(slurmd -C | head -n 1 | sed 's/^NodeName=[^ ]* //')"
    mkdir -p "$TMP/state" "$TMP/spool" "$TMP/log"
    # proctrack/linuxproc and task/none: no cgroups, which containers often lack or mount
    # read-only. cons_tres with CR_Core_Memory hands out cores and memory, so jobs run side by side.
    cat >"$TMP/slurm.conf" <<EOF
ClusterName=bhci
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$((CTLD_PORT + 1))
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$TMP/munge/socket
StateSaveLocation=$TMP/state
SlurmdSpoolDir=$TMP/spool
SlurmctldPidFile=$TMP/slurmctld.pid
SlurmdPidFile=$TMP/slurmd.pid
SlurmctldLogFile=$TMP/log/slurmctld.log
SlurmdLogFile=$TMP/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$TMP/log/jobcomp.txt
MpiDefault=none
MailProg=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
MinJobAge=3600
ReturnToService=2
NodeName=$node NodeAddr=127.0.0.1 $hardware State=UNKNOWN
PartitionName=ci Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
    export SLURM_CONF="$TMP/slurm.conf"
}

last_errors() { # the daemons' fatal lines, or else their last errors
    { grep -h 'fatal' "$@" || grep -h -i 'error' "$@"; } 2>/dev/null | tail -n 3 | tr '\n' ' '
}

wait_for() { # wait_for SECONDS COMMAND...: until COMMAND succeeds
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 1
    done
}

node_idle() { [[ "$(sinfo -h -N -o '%T')" == idle ]]; }

start_slurm() {
    slurmctld -f "$SLURM_CONF" >"$TMP/log/slurmctld.start" 2>&1 ||
        skip "slurmctld did not start: $(tail -n 3 "$TMP/log/slurmctld.start" | tr '\n' ' ')"
    wait_for 30 scontrol ping ||
        skip "slurmctld (port $CTLD_PORT, SLURM_CI_PORT) does not answer after 30 s: $(last_errors "$TMP/log/slurmctld.start" "$TMP/log/slurmctld.log")"
    slurmd -f "$SLURM_CONF" -N "$(hostname -s)" >"$TMP/log/slurmd.start" 2>&1 ||
        skip "slurmd did not start: $(tail -n 3 "$TMP/log/slurmd.start" | tr '\n' ' ')"
    wait_for 60 node_idle ||
        skip "the node is not idle after 60 s (sinfo: '$(sinfo -h -N -o '%T %E' 2>&1 | head -n 1)'): $(last_errors "$TMP/log/slurmd.start" "$TMP/log/slurmd.log")"
}

pid_of() { [[ -s "$1" ]] && cat "$1"; }

stop_cluster() {
    [[ -n "$TMP" && -n "${SLURM_CONF:-}" ]] || return 0
    local ctld
    ctld="$(pid_of "$TMP/slurmctld.pid" || true)"
    if [[ -n "$ctld" ]] && kill -0 "$ctld" 2>/dev/null; then
        # slurmstepd outlives slurmd, so end the jobs before the daemons.
        scancel --quiet --user "$(id -un)" 2>/dev/null || true
        for _ in $(seq 30); do
            [[ -z "$(squeue -h 2>/dev/null)" ]] && break
            sleep 1
        done
        scontrol shutdown >/dev/null 2>&1 || true
    fi
    # Whatever the shutdown left (or a daemon whose partner never came up): TERM, then KILL.
    for pidfile in "$TMP/slurmctld.pid" "$TMP/slurmd.pid" "$TMP/munge/munged.pid"; do
        local pid
        pid="$(pid_of "$pidfile" || true)"
        [[ -n "$pid" ]] || continue
        kill "$pid" 2>/dev/null || continue
        for _ in $(seq 20); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        kill -9 "$pid" 2>/dev/null || true
    done
    return 0
}

cleanup() {
    local status=$?
    if [[ -n "$CHILD" ]]; then
        kill "$CHILD" 2>/dev/null || true
        wait "$CHILD" 2>/dev/null || true
    fi
    stop_cluster
    if [[ -n "$TMP" ]]; then
        if [[ "$KEEP_TMP" == 1 ]]; then
            log "kept $TMP"
        else
            rm -rf "$TMP"
        fi
    fi
    exit "$status"
}

# ----------------------------------------------------------------------------- the runs
# The long steps run in the background: bash runs a trap only after its foreground command ends,
# and a TERM would otherwise wait for sbatch --wait or the whole plugin run.
wait_child() {
    CHILD=$1
    local status=0
    wait "$CHILD" || status=$?
    CHILD=""
    return "$status"
}

simulate() {
    log "simulating 3 participants at 3 sites (2 mm)"
    "$VENV/bin/bids_harmonize-simulate" "$TMP/bids" --sites 3 --subjects 3 --seed 0 >"$TMP/simulate.log" 2>&1 ||
        { tail -n 20 "$TMP/simulate.log"; exit 1; }
    mapfile -t LABELS < <(awk -F'\t' 'NR > 1 { sub(/^sub-/, "", $1); print $1 }' "$TMP/bids/participants.tsv")
    log "participants: ${LABELS[*]}"
}

run_array() {
    log "sbatch --wait --array=1-${#LABELS[@]} scripts/slurm/participant-array.sbatch"
    mkdir -p "$TMP/logs" "$TMP/scratch"
    local status=0
    # The script's 8 CPUs and 16 GB are overridden to fit any machine; --time bounds a hang.
    # TMPDIR: where the tasks put their work directories (and must remove them).
    (cd "$TMP" && TMPDIR="$TMP/scratch" BIDS_HARMONIZE_BIDS="$TMP/bids" BIDS_HARMONIZE_OUT="$TMP/out-array" \
        BIDS_HARMONIZE_CMD="$VENV/bin/bids_harmonize" BIDS_HARMONIZE_ARGS="${RESOLUTION_ARGS[*]}" \
        exec sbatch --parsable --wait --array="1-${#LABELS[@]}" --cpus-per-task=1 --mem=3G \
        --time="$((JOB_LIMIT_S / 60))" "$ARRAY_SCRIPT") >"$TMP/array.jobid" &
    wait_child $! || status=$?
    ARRAY_JOB="$(cut -d';' -f1 "$TMP/array.jobid")"
    log "array job ${ARRAY_JOB:-?} finished, sbatch exit $status"
    if ((status != 0)); then
        tail -n 15 "$TMP"/logs/*.out 2>/dev/null || true
        fail "array job: sbatch --wait exit $status (the highest exit of its tasks; logs in $TMP/logs)"
    fi
    local left
    left="$(find "$TMP/scratch" -mindepth 1 -maxdepth 1)"
    [[ -z "$left" ]] || fail "array tasks left their work directories: $left"
}

run_plugin() {
    log "bids_harmonize participant --use-plugin (Nipype SLURM plugin)"
    cat >"$TMP/slurm-plugin.yml" <<EOF
plugin: SLURM
plugin_args:
  sbatch_args: --cpus-per-task=1 --mem=2G --time=$((JOB_LIMIT_S / 60))
EOF
    FIRST_PLUGIN_JOB="$(jobcomp_records | awk '$1 > max { max = $1 } END { print max + 1 }')"
    local status=0
    # The work directory must be shared by the submitting process and the jobs; here one disk.
    # Without LOGNAME (unset in many containers and CI runners) bids_harmonize must set it for
    # Nipype's plugin; node threads follow the jobs' --cpus-per-task.
    env -u LOGNAME timeout "$JOB_LIMIT_S" "$VENV/bin/bids_harmonize" "$TMP/bids" "$TMP/out-plugin" participant \
        --participant-label "${LABELS[@]}" -w "$TMP/work-plugin" --use-plugin "$TMP/slurm-plugin.yml" \
        "${RESOLUTION_ARGS[@]}" >"$TMP/logs/plugin-run.log" 2>&1 &
    wait_child $! || status=$?
    log "plugin run finished, exit $status"
    if ((status != 0)); then
        tail -n 30 "$TMP/logs/plugin-run.log"
        fail "plugin run: bids_harmonize exit $status (log: $TMP/logs/plugin-run.log)"
    fi
}

# ----------------------------------------------------------------------------- checks
# One line per finished job, by job id: JOBID ARRAY_JOB ARRAY_TASK NAME STATE EXIT CPUS MEM START END
tagged_jobs() { # ids of queued or running jobs that a bids_harmonize run tagged as its own
    squeue -h -o '%i %k' | awk '$2 ~ /^bids_harmonize:/ { print $1 }'
}
has_tagged_jobs() { [[ -n "$(tagged_jobs)" ]]; }
no_tagged_jobs() { [[ -z "$(tagged_jobs)" ]]; }

run_plugin_stopped() { # a plugin run stopped with SIGTERM must cancel the jobs it submitted
    log "bids_harmonize participant --use-plugin, stopped with SIGTERM while its first job waits"
    # --begin keeps the submitted job pending, so the run is certain to have one when it stops.
    sed 's/sbatch_args: /sbatch_args: --begin=now+3600 /' "$TMP/slurm-plugin.yml" >"$TMP/slurm-held.yml"
    env -u LOGNAME "$VENV/bin/bids_harmonize" "$TMP/bids" "$TMP/out-stopped" participant \
        --participant-label "${LABELS[0]}" -w "$TMP/work-stopped" --use-plugin "$TMP/slurm-held.yml" \
        "${RESOLUTION_ARGS[@]}" >"$TMP/logs/stopped-run.log" 2>&1 &
    local pid=$! status=0 held
    CHILD=$pid
    wait_for 120 has_tagged_jobs || fail "stopped run: no job of the run appeared in squeue within 120 s"
    held="$(tagged_jobs | tr '\n' ' ')"
    kill -TERM "$pid"
    wait_child "$pid" || status=$?
    ((status == 143)) || fail "stopped run: exit $status, expected 143 (stopped by SIGTERM)"
    wait_for 30 no_tagged_jobs || fail "stopped run: its jobs $(tagged_jobs | tr '\n' ' ')are still queued"
    grep -q "cancelled .* Slurm job" "$TMP/logs/stopped-run.log" ||
        fail "stopped run: it did not say it cancelled its jobs (log: $TMP/logs/stopped-run.log)"
    log "stopped run: exit $status; its pending job(s) ${held}cancelled"
}

jobcomp_records() {
    [[ -s "$TMP/log/jobcomp.txt" ]] || return 0
    awk '{
        delete f
        for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = substr($i, length(kv[1]) + 2) }
        cpus = f["Tres"]; sub(/.*cpu=/, "", cpus); sub(/,.*/, "", cpus)
        mem = f["Tres"]; sub(/.*mem=/, "", mem); sub(/,.*/, "", mem)
        print f["JobId"], (f["ArrayJobId"] == "" ? "-" : f["ArrayJobId"]), (f["ArrayTaskId"] == "" ? "-" : f["ArrayTaskId"]),
              f["Name"], f["JobState"], f["ExitCode"], cpus, mem, f["StartTime"], f["EndTime"]
    }' "$TMP/log/jobcomp.txt" | sort -n
}

check_outputs() { # check_outputs OUT: preprocessed images for every participant, no crash files
    local out=$1 label image
    for label in "${LABELS[@]}"; do
        for image in "sub-${label}_desc-preproc_T1w.nii.gz" "sub-${label}_space-MNI152NLin2009cSym_res-2_desc-preproc_T1w.nii.gz" \
            "sub-${label}_desc-brain_mask.nii.gz"; do
            [[ -s "$out/sub-$label/anat/$image" ]] || fail "$(basename "$out"): missing sub-$label/anat/$image"
        done
        [[ -s "$out/sub-$label.html" ]] || fail "$(basename "$out"): missing the report sub-$label.html"
    done
    local crashes
    crashes="$(find "$out/logs" -name 'crash-*' 2>/dev/null || true)"
    [[ -z "$crashes" ]] || fail "$(basename "$out"): crash files: $crashes"
}

check_jobs() {
    local records array_tasks plugin_jobs label
    records="$(jobcomp_records)"
    array_tasks="$(awk -v a="$ARRAY_JOB" '$2 == a' <<<"$records")"
    plugin_jobs="$(awk -v first="$FIRST_PLUGIN_JOB" '$1 >= first' <<<"$records")"
    local n_tasks
    n_tasks="$(grep -c . <<<"$array_tasks" || true)"
    [[ "$n_tasks" == "${#LABELS[@]}" ]] ||
        fail "array job $ARRAY_JOB: $n_tasks finished task(s) in the job log, expected ${#LABELS[@]}"
    N_PLUGIN_JOBS="$(grep -c . <<<"$plugin_jobs" || true)"
    for label in "${LABELS[@]}"; do
        grep -q "sub_${label}_" <<<"$plugin_jobs" || fail "Nipype submitted no Slurm job for sub-$label"
    done
    local bad
    bad="$(awk '$5 != "COMPLETED" || $6 != "0:0"' <<<"$array_tasks"$'\n'"$plugin_jobs" | grep . || true)"
    [[ -z "$bad" ]] || fail "jobs not COMPLETED with exit 0:0: $bad"
    # The resources asked for: the array's command line over the script's #SBATCH lines, and
    # the plugin file's sbatch_args on every job Nipype submitted.
    bad="$(awk '$7 != 1 || $8 != "3G"' <<<"$array_tasks" | grep . || true)"
    [[ -z "$bad" ]] || fail "array tasks without the 1 CPU / 3G asked at submission: $bad"
    bad="$(awk '$7 != 1 || $8 != "2G"' <<<"$plugin_jobs" | grep . || true)"
    [[ -z "$bad" ]] || fail "plugin jobs without the plugin file's sbatch_args (1 CPU, 2G): $bad"
    # scontrol still knows the jobs (MinJobAge=3600): the controller's view must agree.
    local not_completed
    not_completed="$(scontrol -o show job 2>/dev/null | grep -o 'JobState=[A-Z_]*' | sort | uniq -c | grep -v COMPLETED || true)"
    [[ -z "$not_completed" ]] || fail "scontrol show job: $not_completed"
}

# ----------------------------------------------------------------------------- listing
listing() {
    echo "Slurm jobs (from the jobcomp/filetxt log; CPUS and MEM are the job's allocation):"
    echo
    echo '```'
    {
        echo "JOBID ARRAYJOB TASK NAME STATE EXIT CPUS MEM START END"
        jobcomp_records
    } | column -t
    echo '```'
    echo
    echo "Array run, \`find out-array -name '*.nii.gz'\`:"
    echo
    echo '```'
    (cd "$TMP" && find out-array -name '*.nii.gz' 2>/dev/null | sort) || true
    echo '```'
    echo
    echo "Nipype SLURM plugin run ($N_PLUGIN_JOBS sbatch jobs), \`find out-plugin -name '*.nii.gz'\`:"
    echo
    echo '```'
    (cd "$TMP" && find out-plugin -name '*.nii.gz' 2>/dev/null | sort) || true
    echo '```'
}

write_report() {
    local wall=$1 verdict=$2
    {
        echo "# A real Slurm run (\`bash .ci/slurm.sh\`)"
        echo
        echo "Command: \`SLURM_CI_REPORT=${REPORT#"$REPO"/} bash .ci/slurm.sh\`, as root, from the repository root."
        echo
        echo "Date: $(date -u '+%Y-%m-%d %H:%M UTC'). Machine: $(uname -m), $(nproc) cores, $(free -g | awk '/^Mem:/ { print $2 }') GiB,"
        # shellcheck source=/dev/null
        echo "$(. /etc/os-release && echo "$PRETTY_NAME"), $(slurmctld -V), munge $(munged -V | awk '{ print $1 }' | sed 's/munge-//'),"
        echo "Python $("$VENV/bin/python" -c 'import platform; print(platform.python_version())'), Nipype $("$VENV/bin/python" -c 'import nipype; print(nipype.__version__)')."
        echo "One-node cluster started by the script (no cgroups, no slurmdbd). Wall time $wall s from the"
        echo "start to the end of the checks (load average before: $LOAD_BEFORE; after: $(cut -d' ' -f1-3 /proc/loadavg))."
        echo
        echo "Result: $verdict."
        echo
        echo "1. \`sbatch --wait --array=1-${#LABELS[@]} --cpus-per-task=1 --mem=3G scripts/slurm/participant-array.sbatch\`"
        echo "   with \`BIDS_HARMONIZE_CMD=.venv/bin/bids_harmonize BIDS_HARMONIZE_ARGS='${RESOLUTION_ARGS[*]}'\`: array job $ARRAY_JOB."
        echo "2. \`bids_harmonize bids out-plugin participant --participant-label ${LABELS[*]} -w work-plugin ${RESOLUTION_ARGS[*]} --use-plugin slurm-plugin.yml\`"
        echo "   with \`{plugin: SLURM, plugin_args: {sbatch_args: --cpus-per-task=1 --mem=2G --time=$((JOB_LIMIT_S / 60))}}\`: jobs $FIRST_PLUGIN_JOB and later."
        echo "3. The same for participant ${LABELS[0]} with \`--begin=now+3600\` added (its first job stays pending),"
        echo "   stopped with SIGTERM once that job is queued: the run must exit 143 and cancel it (CANCELLED below)."
        echo
        echo "Steps:"
        echo
        echo '```'
        cat "$TMP/steps.log"
        echo '```'
        echo
        listing
    } >"$REPORT"
    log "wrote $REPORT"
}

main() {
    [[ "$(uname -s)" == Linux ]] || skip "Slurm daemons need Linux (this is $(uname -s))"
    [[ "$(id -u)" == 0 ]] || skip "not root: slurmd must run as root to start jobs, and apt-get to install it"
    [[ -x "$VENV/bin/bids_harmonize" && -x "$VENV/bin/bids_harmonize-simulate" ]] ||
        { echo "error: no bids_harmonize in $VENV (make install, or set SLURM_CI_VENV)" >&2; exit 1; }
    [[ "$REPORT" == "" || "$REPORT" == /* ]] || REPORT="$PWD/$REPORT"
    LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
    TMP="$(mktemp -d /tmp/bh-slurm-ci.XXXXXX)"
    trap cleanup EXIT
    trap 'exit 130' INT TERM

    install_packages
    log "starting munged, slurmctld and slurmd ($(slurmctld -V))"
    start_munge
    write_slurm_conf
    start_slurm
    log "cluster up: $(sinfo -h -N -o '%N %T %c CPUs %m MB')"

    simulate
    run_array
    check_outputs "$TMP/out-array"
    run_plugin
    check_outputs "$TMP/out-plugin"
    check_jobs
    run_plugin_stopped

    listing
    local verdict="PASSED: ${#LABELS[@]}-task array, Nipype SLURM plugin run ($N_PLUGIN_JOBS jobs), stopped run's jobs cancelled"
    ((${#FAILURES[@]} == 0)) || verdict="FAILED: $(printf '%s; ' "${FAILURES[@]}")"
    [[ -z "$REPORT" ]] || write_report "$((SECONDS - START))" "$verdict"
    if ((${#FAILURES[@]})); then
        log "FAILED (${#FAILURES[@]}):"
        printf '  - %s\n' "${FAILURES[@]}"
        exit 1
    fi
    log "$verdict in $((SECONDS - START)) s"
}

main "$@"
