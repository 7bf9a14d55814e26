# The node side of `python -m ops`: one function per step. The tool sends this file followed by the
# calls of one round trip to `sh -s` over ssh, as root. POSIX sh and what a stock Ubuntu cloud image
# with docker.io has: coreutils (sha256sum, stat, base64, mktemp), curl, iproute2, docker.
# Every step prints "@@ <section>" lines the tool parses (ops/remote.py); docker's and curl's own
# output is kept inside a section.
set -u
umask 022

kha_section() { printf '@@ %s\n' "$*"; }

# kha_report STATE_FILE HEALTH_PORT STATS_URI METRICS_URI "CONTAINER..." FILE...: everything status needs.
kha_report() {
    state_file=$1 port=$2 stats=$3 metrics=$4 containers=$5
    shift 5
    kha_section time
    date +%s
    kha_section state
    if [ -r "$state_file" ]; then cat "$state_file"; fi
    kha_addresses
    kha_section stats
    printf '%s\n' "$(curl --silent --fail --max-time 2 "http://127.0.0.1:$port$stats;csv")"
    kha_section started
    printf '%s\n' "$(curl --silent --fail --max-time 2 "http://127.0.0.1:$port$metrics" | grep '^haproxy_process_start_time_seconds')"
    for name in $containers; do
        kha_section container "$name"
        printf '%s\n' "$(docker inspect --type container --format '{{json .}}' "$name" 2>/dev/null)"
    done
    kha_section files
    for file in "$@"; do
        if [ -f "$file" ]; then
            printf '%s %s %s\n' "$(sha256sum < "$file" | cut -c1-64)" "$(stat -c '%U:%G:%a' "$file")" "$file"
        else
            printf 'missing - %s\n' "$file"
        fi
    done
    kha_section end
}

# kha_boot MARKER: what the first boot's script wrote where it gave up (nothing when it did not).
kha_boot() {
    kha_section boot
    if [ -r "$1" ]; then cat "$1"; fi
}

kha_addresses() {
    kha_section addresses
    ip -o -4 addr show
}

# kha_put PATH OWNER MODE, the content base64-encoded on stdin: written beside the old file, then
# renamed over it, so neither a container nor a reload ever reads half a file.
kha_put() {
    dir=$(dirname "$1")
    tmp="$dir/.$(basename "$1").kha-new"
    if mkdir -p "$dir" && base64 -d > "$tmp" && chown "$2" "$tmp" && chmod "$3" "$tmp" && mv -f "$tmp" "$1"; then
        return 0
    fi
    rm -f "$tmp"
    kha_section failed "writing $1"
    return 1
}

# kha_step NAME COMMAND...: run one step, print its output and exit status in a section.
kha_step() {
    name=$1
    shift
    out=$("$@" 2>&1)
    rc=$?
    kha_section step "$name" "$rc"
    printf '%s\n' "$out"
    return $rc
}

# kha_image IMAGE: the image is on the node, or is pulled now (before anything changes).
kha_image() {
    docker image inspect "$1" > /dev/null 2>&1 || docker pull --quiet "$1"
}

# kha_recreate NAME DOCKER-RUN-ARGV...: stop gracefully (haproxy finishes its connections, a
# keepalived MASTER sends priority 0), remove, and run the userdata's line again.
kha_recreate() {
    name=$1
    shift
    if docker inspect --type container "$name" > /dev/null 2>&1; then
        docker stop "$name" > /dev/null && docker rm "$name" > /dev/null || return 1
    fi
    "$@"
}

# kha_reload_keepalived CONTAINER: keepalived reloads on SIGHUP to its main process; in
# osixia/keepalived that is not the container's PID 1 (the image's run tool), so the signal goes to
# the pid keepalived records.
kha_reload_keepalived() {
    docker exec "$1" sh -c 'kill -HUP "$(cat /var/run/keepalived.pid)"'
}
