#!/usr/bin/env bash
# vsync host tuning: the kernel settings the multicast benchmarks need.
#
#   tuning/tune.sh            apply the recommended values (raise-only), saving originals
#   tuning/tune.sh --show     print current vs recommended and the symptom counters; change nothing
#   tuning/tune.sh --dry-run  print what --apply would write; change nothing
#   tuning/tune.sh --revert   restore the values saved by the first apply
#
# Options (combine with apply / --show / --dry-run):
#   --busy-poll        also set net.core.busy_poll / busy_read (burns CPU; off by default)
#   --enable-io-uring  also set kernel.io_uring_disabled=0 if io_uring is disabled
#   --state FILE       where originals are saved (default /var/lib/vsync/tune.saved)
#
# Only sysctls under /proc/sys are read or written: no interface, route, qdisc, IRQ or
# CPU setting is touched. "Raise-only": a value already at or above the recommendation is
# left alone, so the script never lowers what someone else raised. Applying twice is a
# no-op; the originals are saved once, at the first apply that changes something, and
# --revert puts exactly those back. Several knobs are per network namespace (marked
# "netns" in --show); run the script inside a namespace with `ip netns exec NS` to tune
# that namespace. See tuning/README.md for what each knob does and why.
#
# For tests, VSYNC_SYSCTL_ROOT points the script at a fake /proc/sys tree.
set -euo pipefail

SYSCTL_ROOT="${VSYNC_SYSCTL_ROOT:-/proc/sys}"
STATE="${VSYNC_TUNE_STATE:-/var/lib/vsync/tune.saved}"
ACTION=apply
BUSY_POLL=0
ENABLE_URING=0

usage() { sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --show) ACTION=show ;;
        --dry-run) ACTION="dry-run" ;;
        --apply) ACTION=apply ;;
        --revert) ACTION=revert ;;
        --busy-poll) BUSY_POLL=1 ;;
        --enable-io-uring) ENABLE_URING=1 ;;
        --state)
            [ $# -ge 2 ] || { echo "tune.sh: --state needs a file" >&2; exit 2; }
            STATE="$2"
            shift
            ;;
        -h|--help) usage; exit 0 ;;
        *) echo "tune.sh: unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

# name | recommended | scope        (recommended values are raise-only minimums)
KNOBS=(
    "net.core.rmem_max|67108864|netns"
    "net.core.wmem_max|67108864|netns"
    "net.core.rmem_default|1048576|netns"
    "net.core.wmem_default|1048576|netns"
    "net.core.optmem_max|131072|netns"
    "net.core.netdev_max_backlog|65536|global"
    "net.core.netdev_budget|600|global"
    "net.core.netdev_budget_usecs|8000|global"
    "net.ipv4.udp_mem|131072 196608 262144|global"
    "net.ipv4.udp_rmem_min|16384|netns"
    "net.ipv4.udp_wmem_min|16384|netns"
    "net.ipv4.igmp_max_memberships|1024|netns"
    "net.ipv4.igmp_max_msf|256|netns"
)
OPTIONAL_BUSY=(
    "net.core.busy_poll|50|global"
    "net.core.busy_read|50|global"
)

knob_path() { printf '%s/%s' "$SYSCTL_ROOT" "$(printf '%s' "$1" | tr . /)"; }

read_knob() { # prints the value with whitespace normalised, or nothing if absent
    local p
    p="$(knob_path "$1")"
    [ -r "$p" ] || return 0
    tr -s ' \t' '  ' <"$p" | sed 's/^ //; s/ $//'
}

# target CURRENT RECOMMENDED -> raise-only target (field-wise for multi-value knobs)
target() {
    local -a cur rec out
    read -r -a cur <<<"$1"
    read -r -a rec <<<"$2"
    if [ "${#cur[@]}" -ne "${#rec[@]}" ]; then
        printf '%s' "$2"
        return
    fi
    local i
    for i in "${!rec[@]}"; do
        if [ "${cur[$i]}" -ge "${rec[$i]}" ] 2>/dev/null; then
            out+=("${cur[$i]}")
        else
            out+=("${rec[$i]}")
        fi
    done
    printf '%s' "${out[*]}"
}

write_knob() {
    local p
    p="$(knob_path "$1")"
    printf '%s\n' "$2" >"$p"
}

all_knobs() {
    printf '%s\n' "${KNOBS[@]}"
    if [ "$BUSY_POLL" = 1 ]; then printf '%s\n' "${OPTIONAL_BUSY[@]}"; fi
    if [ "$ENABLE_URING" = 1 ]; then printf '%s\n' "kernel.io_uring_disabled|0|global"; fi
}

show_counters() {
    echo
    echo "symptom counters (see tuning/README.md):"
    if [ -r /proc/net/snmp ]; then
        awk '/^Udp:/ { if (!h) { for (i = 2; i <= NF; i++) n[i] = $i; h = 1 } else {
                 for (i = 2; i <= NF; i++)
                     if (n[i] ~ /^(InErrors|RcvbufErrors|SndbufErrors|MemErrors|NoPorts)$/)
                         printf "  Udp %-13s %s\n", n[i], $i } }' /proc/net/snmp
    fi
    if [ -r /proc/net/softnet_stat ]; then
        local drop squeeze d=0 q=0
        while read -r _ drop squeeze _; do
            d=$((d + 16#$drop))
            q=$((q + 16#$squeeze))
        done </proc/net/softnet_stat
        echo "  softnet dropped   $d   (backlog full: net.core.netdev_max_backlog)"
        echo "  softnet squeezed  $q   (softirq budget ran out: net.core.netdev_budget*)"
    fi
}

show_knobs() {
    printf '%s\n' "${KNOBS[@]}" "${OPTIONAL_BUSY[@]}" "kernel.io_uring_disabled|0|global"
}

do_show() {
    printf '%-30s %-24s %-24s %-6s %s\n' knob current recommended scope status
    local name rec scope cur tgt status
    while IFS='|' read -r name rec scope; do
        cur="$(read_knob "$name")"
        if [ -z "$cur" ]; then
            status="absent here"
            [ "$scope" = global ] && status="absent here (global knob: root namespace only)"
            printf '%-30s %-24s %-24s %-6s %s\n' "$name" "-" "$rec" "$scope" "$status"
            continue
        fi
        if [ "$name" = kernel.io_uring_disabled ]; then
            tgt=0 # lower is better: 0 = io_uring allowed for everyone
        else
            tgt="$(target "$cur" "$rec")"
        fi
        if [ "$tgt" = "$cur" ]; then
            status=ok
        elif [ "${name#net.core.busy_}" != "$name" ] && [ "$BUSY_POLL" = 0 ]; then
            status="opt-in: --busy-poll would set $tgt"
        elif [ "$name" = kernel.io_uring_disabled ] && [ "$ENABLE_URING" = 0 ]; then
            status="io_uring disabled: --enable-io-uring would set 0"
        else
            status="apply would set $tgt"
        fi
        printf '%-30s %-24s %-24s %-6s %s\n' "$name" "$cur" "$rec" "$scope" "$status"
    done < <(show_knobs)
    show_counters
}

save_original() { # name value: record once
    mkdir -p "$(dirname "$STATE")"
    touch "$STATE"
    if ! grep -q "^$1=" "$STATE"; then
        printf '%s=%s\n' "$1" "$2" >>"$STATE"
    fi
}

need_root() {
    if [ "$SYSCTL_ROOT" = /proc/sys ] && [ "$(id -u)" != 0 ]; then
        echo "tune.sh: $ACTION needs root (use --show to only look)" >&2
        exit 1
    fi
}

do_apply() { # $1 = 1 for dry run
    local dry="$1" name rec scope cur tgt changed=0 failed=0
    [ "$dry" = 1 ] || need_root
    while IFS='|' read -r name rec scope; do
        cur="$(read_knob "$name")"
        if [ -z "$cur" ]; then
            echo "skip  $name (not present in this kernel / namespace)"
            continue
        fi
        if [ "$name" = kernel.io_uring_disabled ]; then
            tgt=0
        else
            tgt="$(target "$cur" "$rec")"
        fi
        if [ "$tgt" = "$cur" ]; then
            echo "ok    $name = $cur"
            continue
        fi
        if [ ! -w "$(knob_path "$name")" ]; then
            echo "skip  $name: $cur, wanted $tgt, but it is read-only here"
            continue
        fi
        if [ "$dry" = 1 ]; then
            echo "would $name: $cur -> $tgt"
            continue
        fi
        save_original "$name" "$cur"
        if write_knob "$name" "$tgt" 2>/dev/null; then
            echo "set   $name: $cur -> $(read_knob "$name")"
            changed=1
        else
            echo "FAIL  $name: could not write $tgt (still $(read_knob "$name"))" >&2
            failed=1
        fi
    done < <(all_knobs)
    if [ "$dry" = 0 ] && [ "$changed" = 1 ]; then
        echo "originals saved in $STATE (undo with --revert)"
    fi
    return "$failed"
}

do_revert() {
    need_root
    if [ ! -s "$STATE" ]; then
        echo "nothing to revert ($STATE is missing or empty)"
        return 0
    fi
    local name val failed=0
    while IFS='=' read -r name val; do
        [ -n "$name" ] || continue
        if [ -z "$(read_knob "$name")" ]; then
            echo "skip  $name (not present)"
            continue
        fi
        if [ "$(read_knob "$name")" = "$(printf '%s' "$val" | tr -s ' \t' '  ' | sed 's/^ //; s/ $//')" ]; then
            echo "ok    $name = $val"
        elif write_knob "$name" "$val" 2>/dev/null; then
            echo "reset $name = $(read_knob "$name")"
        else
            echo "FAIL  $name: could not restore $val" >&2
            failed=1
        fi
    done <"$STATE"
    if [ "$failed" = 0 ]; then rm -f "$STATE"; fi
    return "$failed"
}

case "$ACTION" in
    show) do_show ;;
    dry-run) do_apply 1 ;;
    apply) do_apply 0 ;;
    revert) do_revert ;;
esac
