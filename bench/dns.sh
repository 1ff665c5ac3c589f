#!/usr/bin/env bash
# DNS benchmark: the project's server against gdnsd (the speed reference) and PowerDNS LUA records
# (the peer that, like us, does geo and health in the server), one after the other in one run, on
# loopback, same mmdb, same zone content, same dnsperf query mix with ECS. Each server is pinned to
# one core (taskset -c $SERVER_CPU), dnsperf to the other ($CLIENT_CPU). See docs/benchmarks.md.
#
# Usage: bench/dns.sh            (or `make bench-dns`; everything below can be set from the environment)
#   BENCH_DNS_DURATION=10        seconds of each max-rate dnsperf run
#   BENCH_DNS_LAT_DURATION=5     seconds of each latency run (at half the measured max rate)
#   BENCH_DNS_ROUNDS=2           rounds over all servers, interleaved; each server's best round counts
#   BENCH_DNS_CLIENTS=4          dnsperf -c
#   BENCH_DNS_OUTSTANDING=100    dnsperf -q
#   BENCH_DNS_SERVERS="gdnsd pdns mirrordns mirrordns-2w"   which runs, in this order
#   BENCH_DNS_PORT=15300         first of 4 consecutive loopback ports used (checked free at start)
#   BENCH_DNS_KEEP=1             keep the temp dir (configs, logs, raw dnsperf output)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERE=$ROOT/bench/dns
PY=${PY:-$ROOT/.venv/bin/python}
DURATION=${BENCH_DNS_DURATION:-10}
LAT_DURATION=${BENCH_DNS_LAT_DURATION:-5}
ROUNDS=${BENCH_DNS_ROUNDS:-2}
CLIENTS=${BENCH_DNS_CLIENTS:-4}
OUTSTANDING=${BENCH_DNS_OUTSTANDING:-100}
SERVERS=${BENCH_DNS_SERVERS:-"gdnsd pdns mirrordns mirrordns-2w"}
BASE_PORT=${BENCH_DNS_PORT:-15300}
SERVER_CPU=0
CLIENT_CPU=1
ECS=8:00011800c00002          # ECS option: family 1 (IPv4), source /24, scope 0, 192.0.2.0 (DE in geo.mmdb)
ZONE=mirrors.example.org
QUERIES=$HERE/queries.txt

GDNSD_PORT=$BASE_PORT
PDNS_PORT=$((BASE_PORT + 1))
MDNS_PORT=$((BASE_PORT + 2))
HEALTH_PORT=$((BASE_PORT + 3))
MIRROR_IPS="127.10.1.1 127.10.1.2 127.10.3.1 127.10.2.1 127.10.2.2"
DE_IPS="127.10.1.1 127.10.1.2"
US_IPS="127.10.2.1 127.10.2.2"

die() { echo "bench/dns.sh: ERROR: $*" >&2; exit 1; }
log() { echo "bench/dns.sh: $*" >&2; }

# --- preflight ----------------------------------------------------------------------------------
for tool in dnsperf dig taskset setsid ss gdnsd pdns_server; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found: run 'make debs-bench' (Debian: dnsperf dnsutils util-linux iproute2 gdnsd pdns-server pdns-backend-bind pdns-backend-geoip)"
done
[ -e /usr/lib/x86_64-linux-gnu/pdns/libgeoipbackend.so ] || ls /usr/lib/*/pdns/libgeoipbackend.so >/dev/null 2>&1 \
    || die "PowerDNS geoip backend missing (LUA country()/continent() need it): apt-get install pdns-backend-geoip"
[ -x "$PY" ] || die "$PY not found: run 'make install-test' first"
ncpu=$(nproc)
[ "$ncpu" -ge 2 ] || die "needs at least 2 cores (server on core $SERVER_CPU, dnsperf on core $CLIENT_CPU); this machine has $ncpu"

port_busy() {  # a UDP or TCP listener on any local address with that port
    [ -n "$(ss -Hlnu "( sport = :$1 )" 2>/dev/null)$(ss -Hlnt "( sport = :$1 )" 2>/dev/null)" ]
}
for p in $GDNSD_PORT $PDNS_PORT $MDNS_PORT $HEALTH_PORT; do
    if port_busy "$p"; then
        die "port $p is in use (set BENCH_DNS_PORT to another base; ports used: $BASE_PORT-$HEALTH_PORT)"
    fi
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mirrordns-bench-dns.XXXXXX")
mkdir -p "$WORK/state/gdnsd-run" "$WORK/state/gdnsd-state" "$WORK/state/pdns" "$WORK/pdns" "$WORK/out"
PIDS=()

cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do
        # every server runs in its own session (setsid): its process group holds any workers it forked
        kill -TERM -- "-$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$pid" 2>/dev/null || true
    done
    if [ -n "${BENCH_DNS_KEEP:-}" ] || [ "$rc" -ne 0 ]; then
        log "work files kept in $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME CPUS CMD...: run CMD in a session of its own pinned to CPUS, output to $WORK/NAME.log.
# Sets LASTPID (= the process group id, since setsid makes it a group leader).
start() {
    local name=$1 cpus=$2; shift 2
    setsid taskset -c "$cpus" "$@" >"$WORK/$name.log" 2>&1 < /dev/null &
    LASTPID=$!
    PIDS+=("$LASTPID")
}

stop() {  # stop PID and its process group, and wait for it to go
    local pid=$1
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
}

q() {  # q PORT NAME TYPE [dig options...]: the answer's record data, one per line, sorted
    local port=$1 name=$2 type=$3; shift 3
    dig @127.0.0.1 -p "$port" "$name" "$type" +short +time=1 +tries=1 "$@" 2>/dev/null | sort || true
}

rcode() {  # rcode PORT NAME TYPE: NOERROR, NXDOMAIN, ...
    dig @127.0.0.1 -p "$1" "$2" "$3" +time=1 +tries=1 2>/dev/null | sed -n 's/.*status: \([A-Z]*\),.*/\1/p' || true
}

wait_up() {  # wait_up NAME PORT PID: until static.Z answers, or fail with the server's log
    local name=$1 port=$2 pid=$3
    for _ in $(seq 60); do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$WORK/$name.log" >&2 || true
            die "$name exited during startup (log above, full log in $WORK/$name.log)"
        fi
        [ "$(q "$port" "static.$ZONE" A)" = "127.10.9.9" ] && return 0
        sleep 0.5
    done
    tail -n 30 "$WORK/$name.log" >&2 || true
    die "$name did not answer 'dig @127.0.0.1 -p $port static.$ZONE' with 127.10.9.9 within 30 s (log above, full log in $WORK/$name.log)"
}

subset_of() {  # subset_of "ANSWERS" "ALLOWED": at least one answer, and every one is in ALLOWED
    local a ok=1
    for a in $1; do
        case " $2 " in *" $a "*) ok=0 ;; *) return 1 ;; esac
    done
    return $ok
}

answers_wrong() {  # answers_wrong PORT: print what is wrong with the mix's answers (nothing if all right)
    local port=$1 ans
    ans=$(q "$port" "www.$ZONE" A +subnet=192.0.2.0/24)
    subset_of "$ans" "$DE_IPS" || echo "www.$ZONE with ECS 192.0.2.0/24 (DE) answered '${ans//$'\n'/ }', expected DE mirrors ($DE_IPS)"
    ans=$(q "$port" "www.$ZONE" A +subnet=198.51.100.0/24)
    subset_of "$ans" "$US_IPS" || echo "www.$ZONE with ECS 198.51.100.0/24 (US) answered '${ans//$'\n'/ }', expected US mirrors ($US_IPS)"
    ans=$(q "$port" "de.$ZONE" A)
    subset_of "$ans" "$DE_IPS" || echo "de.$ZONE answered '${ans//$'\n'/ }', expected DE mirrors ($DE_IPS)"
    ans=$(q "$port" "us.$ZONE" A)
    subset_of "$ans" "$US_IPS" || echo "us.$ZONE answered '${ans//$'\n'/ }', expected US mirrors ($US_IPS)"
    ans=$(q "$port" "fr.$ZONE" A)
    [ "$ans" = 127.10.3.1 ] || echo "fr.$ZONE answered '${ans//$'\n'/ }', expected the FR mirror (127.10.3.1)"
    [ "$(rcode "$port" "nx1.$ZONE" A)" = NXDOMAIN ] || echo "nx1.$ZONE is not NXDOMAIN"
    [ "$(rcode "$port" "www.$ZONE" AAAA)" = NOERROR ] || echo "www.$ZONE AAAA is not NOERROR (NODATA)"
    [ -n "$(q "$port" "$ZONE" SOA)" ] || echo "no SOA for $ZONE"
}

check_answers() {  # check_answers NAME PORT: every server answers the mix's names the same way
    local name=$1 port=$2 wrong
    # the peers' health checks (gdnsd http_status, PowerDNS ifurlup) start with the first query of a
    # name and take a few seconds to mark addresses UP, so retry for a while before calling it wrong
    for _ in $(seq 40); do
        wrong=$(answers_wrong "$port")
        [ -z "$wrong" ] && break
        sleep 0.5
    done
    [ -z "$wrong" ] || die "$name answers wrongly (dig @127.0.0.1 -p $port ...):"$'\n'"$wrong"
    log "$name answers: www(ECS DE)=$(q "$port" "www.$ZONE" A +subnet=192.0.2.0/24 | paste -sd,)" \
        "www(ECS US)=$(q "$port" "www.$ZONE" A +subnet=198.51.100.0/24 | paste -sd,)" \
        "fr=$(q "$port" "fr.$ZONE" A | paste -sd,) us=$(q "$port" "us.$ZONE" A | paste -sd,) nx1=NXDOMAIN AAAA=NODATA"
}

cpu_ticks() {  # "PID TICKS" (utime+stime clock ticks) for every process in a process group
    local pgid=$1 p
    ps -e -o pgid=,pid= | awk -v g="$pgid" '$1 == g {print $2}' | while read -r p; do
        awk -v p="$p" '{print p, $14 + $15}' "/proc/$p/stat" 2>/dev/null || true
    done
}

cpu_use() {  # cpu_use "BEFORE" "AFTER" SECONDS: "TOTAL% PER-PROCESS%..." over that time
    awk -v hz="$(getconf CLK_TCK)" -v d="$3" '
        NR == FNR {t0[$1] = $2; next}
        {u = ($2 - t0[$1]) / hz / d * 100; tot += u; each = each sprintf(" %.0f", u)}
        END {printf "%.0f%s", tot, each}' <(echo "$1") <(echo "$2")
}

# Per label, the round with the best queries/s (R_*), and every round's queries/s (R_ALL).
declare -A R_QPS R_AVG R_P50 R_P99 R_LOST R_CPU R_CCPU R_RATE R_ALL
ORDER=()

measure() {  # measure LABEL PORT PGID: one max-rate run, then one latency run at half that rate
    local label=$1 port=$2 pid=$3 f="$WORK/out/$1-r$ROUND" t0 t1 qps rate use ccpu
    log "$label: max rate for ${DURATION}s (round $ROUND of $ROUNDS)"
    t0=$(cpu_ticks "$pid")
    # bash's `time` gives dnsperf's own CPU seconds: near $DURATION means dnsperf was the limit
    { TIMEFORMAT='%U %S'; time taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$port" -d "$QUERIES" \
        -l "$DURATION" -c "$CLIENTS" -q "$OUTSTANDING" -E "$ECS" >"$f.max" 2>&1; } 2>"$f.time" \
        || die "$label: dnsperf failed: $(tail -n 5 "$f.max")"
    t1=$(cpu_ticks "$pid")
    ccpu=$(awk -v d="$DURATION" '{printf "%.0f", ($1 + $2) / d * 100}' "$f.time")
    qps=$(awk '/Queries per second:/ {printf "%.0f", $4}' "$f.max")
    [ -n "$qps" ] || die "$label: no 'Queries per second' in dnsperf's output ($f.max)"
    use=$(cpu_use "$t0" "$t1" "$DURATION")
    if [ "$(echo "$t1" | wc -l)" -gt 1 ]; then
        log "$label: CPU per process (%): ${use#* } (SO_REUSEPORT spreads dnsperf's $CLIENTS sockets by source port)"
        if echo "${use#* }" | awk '{m = $1; for (i = 2; i <= NF; i++) if ($i < m) m = $i} END {exit !(m < 5)}'; then
            log "WARNING: $label: a worker got (almost) no queries: the kernel hashed all of dnsperf's" \
                "$CLIENTS sockets to one worker; rerun, or raise BENCH_DNS_CLIENTS"
        fi
    fi
    rate=$(awk -v q="$qps" 'BEGIN {printf "%d", q / 2}')
    log "$label: $qps q/s (server CPU ${use%% *}%, dnsperf CPU $ccpu%); latency run at $rate q/s for ${LAT_DURATION}s"
    # -v prints one line per reply ("> RCODE NAME TYPE SECONDS"); p99 of the last field
    taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$port" -d "$QUERIES" -l "$LAT_DURATION" \
        -c "$CLIENTS" -q "$OUTSTANDING" -E "$ECS" -Q "$rate" -v >"$f.lat" 2>&1 \
        || die "$label: dnsperf latency run failed: $(tail -n 5 "$f.lat")"
    awk '/^> / {print $NF}' "$f.lat" | sort -g > "$f.lat.sorted"
    [ -n "${R_ALL[$label]:-}" ] || ORDER+=("$label")
    R_ALL[$label]="${R_ALL[$label]:-}${R_ALL[$label]:+ }$qps"
    if [ -z "${R_QPS[$label]:-}" ] || [ "$qps" -gt "${R_QPS[$label]}" ]; then
        R_QPS[$label]=$qps
        R_AVG[$label]=$(awk '/Average Latency \(s\):/ {printf "%.3f", $4 * 1000}' "$f.max")
        R_LOST[$label]=$(awk '/Queries lost:/ {print $3}' "$f.max")
        R_CPU[$label]=${use%% *}
        R_CCPU[$label]=$ccpu
        R_RATE[$label]=$rate
        R_P50[$label]=$(pct 0.50 "$f.lat.sorted")
        R_P99[$label]=$(pct 0.99 "$f.lat.sorted")
    fi
}

pct() {  # pct FRACTION SORTED_FILE: that percentile of a sorted column of seconds, in ms
    awk -v p="$1" '{v[NR] = $1} END {if (NR == 0) {print "n/a"; exit}
        i = int(NR * p + 0.5); if (i < 1) i = 1; printf "%.3f", v[i] * 1000}' "$2"
}

render() {  # render TEMPLATE OUT: copy with the placeholders filled in
    sed -e "s#@PERF@#$WORK#g" -e "s#@HEALTH_PORT@#$HEALTH_PORT#g" \
        -e "s#@WORKERS@#${WORKERS:-1}#g" -e "s#@PORT@#$PORT#g" "$1" > "$2"
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
if awk -v l="${LOAD_START%% *}" 'BEGIN {exit !(l > 0.5)}'; then
    log "WARNING: load average $LOAD_START before starting: other work shares these cores, expect noisy figures"
fi

# --- shared fixtures: the geo database, the health endpoints -------------------------------------
log "work dir $WORK"
"$PY" "$HERE/make_mmdb.py" "$WORK/geo.mmdb" \
    || die "could not build the test mmdb (mmdb-writer missing from $PY's venv? run 'make install-test')"
: > "$WORK/down.txt"
# the peers' own health checks hit these; on dnsperf's core (a probe every 2 s), with a bounded lifetime
# shellcheck disable=SC2086  # MIRROR_IPS is a list of addresses, one argument each
start health "$CLIENT_CPU" "$PY" "$HERE/health_http.py" --lifetime 1800 "$HEALTH_PORT" "$WORK/down.txt" $MIRROR_IPS
HEALTH_PID=$LASTPID
for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.10.1.1/$HEALTH_PORT") 2>/dev/null && break
    kill -0 "$HEALTH_PID" 2>/dev/null || die "health_http.py exited: $(cat "$WORK/health.log")"
    sleep 0.1
done

# --- the servers ---------------------------------------------------------------------------------
run_gdnsd() {
    PORT=$GDNSD_PORT
    rm -rf "$WORK/gdnsd"
    cp -r "$HERE/gdnsd" "$WORK/gdnsd"
    render "$HERE/gdnsd/config" "$WORK/gdnsd/config"
    gdnsd -c "$WORK/gdnsd" checkconf >"$WORK/gdnsd-checkconf.log" 2>&1 \
        || die "gdnsd checkconf failed: $(tail -n 5 "$WORK/gdnsd-checkconf.log")"
    start gdnsd "$SERVER_CPU" gdnsd -c "$WORK/gdnsd" start
    wait_up gdnsd "$PORT" "$LASTPID"
    check_answers gdnsd "$PORT"
    measure gdnsd "$PORT" "$LASTPID"
    stop "$LASTPID"
}

run_pdns() {
    PORT=$PDNS_PORT
    render "$HERE/pdns/pdns.conf.in" "$WORK/pdns/pdns.conf"
    render "$HERE/pdns/named.conf.in" "$WORK/pdns/named.conf"
    render "$HERE/pdns/mirrors.example.org.zone.in" "$WORK/pdns/mirrors.example.org.zone"
    cp "$HERE/pdns/geo-empty.yaml" "$WORK/pdns/"
    start pdns "$SERVER_CPU" pdns_server --config-dir="$WORK/pdns"
    wait_up pdns "$PORT" "$LASTPID"
    check_answers pdns "$PORT"
    measure pdns "$PORT" "$LASTPID"
    stop "$LASTPID"
}

run_mirrordns() {  # run_mirrordns LABEL WORKERS CPUS
    local label=$1 cpus=$3
    PORT=$MDNS_PORT
    WORKERS=$2
    rm -f "$WORK/mirrordns.sqlite"*
    render "$HERE/mirrordns.toml" "$WORK/mirrordns.toml"
    render "$HERE/mirrordns.zone" "$WORK/mirrordns.zone"
    "$PY" "$HERE/setup_db.py" "$WORK/mirrordns.toml" >"$WORK/$label-setup.log" 2>&1 \
        || die "$label: setup_db.py failed: $(tail -n 5 "$WORK/$label-setup.log")"
    # dnsd.worker: the DNS server alone (no probes, no admin web); with workers = 2 it starts a second
    # process (--single) on the same port with SO_REUSEPORT, in the same process group
    start "$label" "$cpus" "$PY" -m dnsd.worker --config "$WORK/mirrordns.toml"
    wait_up "$label" "$PORT" "$LASTPID"
    if [ "$WORKERS" -gt 1 ]; then
        # one worker per core: the first stays on core $SERVER_CPU, the second joins dnsperf on $CLIENT_CPU
        local pids n=0 p
        for _ in $(seq 50); do
            pids=$(ps -e -o pgid=,pid= | awk -v g="$LASTPID" '$1 == g {print $2}')
            [ "$(echo "$pids" | wc -w)" -ge "$WORKERS" ] && break
            sleep 0.2
        done
        [ "$(echo "$pids" | wc -w)" -ge "$WORKERS" ] || die "$label: expected $WORKERS worker processes, found: ${pids//$'\n'/ }"
        taskset -pc "$SERVER_CPU" "$LASTPID" >/dev/null
        for p in $pids; do
            [ "$p" = "$LASTPID" ] && continue
            taskset -pc "$CLIENT_CPU" "$p" >/dev/null
            n=$((n + 1))
        done
        log "$label: worker $LASTPID on core $SERVER_CPU, $n more on core $CLIENT_CPU"
        # the extra worker builds its own plan: wait until it answers as well (SO_REUSEPORT spreads
        # queries by source port, so a few dig runs reach both)
        sleep 1
    fi
    check_answers "$label" "$PORT"
    measure "$label" "$PORT" "$LASTPID"
    stop "$LASTPID"
}

# Rounds interleave the servers (gdnsd, pdns, mirrordns, ..., gdnsd, pdns, ...), each started afresh,
# so load from elsewhere that comes and goes hits them all alike; the best round of each counts.
for ROUND in $(seq "$ROUNDS"); do
    for s in $SERVERS; do
        case $s in
            gdnsd) run_gdnsd ;;
            pdns) run_pdns ;;
            mirrordns) run_mirrordns mirrordns 1 "$SERVER_CPU" ;;
            # 2 workers need 2 cores, so dnsperf shares its core with one of them (docs/benchmarks.md)
            mirrordns-2w) run_mirrordns mirrordns-2w 2 "$SERVER_CPU,$CLIENT_CPU" ;;
            *) die "unknown server '$s' in BENCH_DNS_SERVERS (known: gdnsd pdns mirrordns mirrordns-2w)" ;;
        esac
    done
done

# --- report --------------------------------------------------------------------------------------
mkdir -p "$ROOT/bench/out"
OUT=$ROOT/bench/out/dns-$(date -u +%Y%m%dT%H%M%SZ).txt
{
    echo "DNS benchmark $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores: $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
    echo "dnsperf $(dnsperf -h 2>&1 | awk '/^Version/ {print $2}') -d bench/dns/queries.txt -c $CLIENTS -q $OUTSTANDING -E $ECS:" \
        "${DURATION}s at max rate, then ${LAT_DURATION}s at half that rate for p50/p99;" \
        "$ROUNDS round(s), servers interleaved, each server's best round shown"
    echo "server pinned to core $SERVER_CPU, dnsperf to core $CLIENT_CPU (mirrordns-2w: one worker per core, sharing dnsperf's);" \
        "load average at start $LOAD_START, at end $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "srv CPU / perf CPU: the server's (all its processes) and dnsperf's CPU use during the max-rate run, 100% = one core"
    echo
    printf '%-13s %10s %7s %5s %8s %8s %10s %7s %7s %8s\n' server "queries/s" "avg ms" lost "srv CPU" "perf CPU" "half rate" "p50 ms" "p99 ms" "vs gdnsd"
    for l in "${ORDER[@]}"; do
        ratio=n/a
        if [ -n "${R_QPS[gdnsd]:-}" ]; then
            ratio=$(awk -v a="${R_QPS[$l]}" -v b="${R_QPS[gdnsd]}" 'BEGIN {printf "%.2f", a / b}')
        fi
        printf '%-13s %10.0f %7s %5s %7s%% %7s%% %10s %7s %7s %8s\n' "$l" "${R_QPS[$l]}" "${R_AVG[$l]}" "${R_LOST[$l]}" \
            "${R_CPU[$l]}" "${R_CCPU[$l]}" "${R_RATE[$l]}" "${R_P50[$l]}" "${R_P99[$l]}" "$ratio"
    done
    if [ "$ROUNDS" -gt 1 ]; then
        echo
        for l in "${ORDER[@]}"; do printf 'queries/s per round, %-13s %s\n' "$l:" "${R_ALL[$l]}"; done
    fi
    if [ -n "${R_QPS[mirrordns]:-}" ] && [ -n "${R_QPS[mirrordns-2w]:-}" ]; then
        echo
        awk -v a="${R_QPS[mirrordns-2w]}" -v b="${R_QPS[mirrordns]}" \
            'BEGIN {printf "mirrordns 2 workers / 1 worker: %.2fx (one worker shares dnsperf'"'"'s core)\n", a / b}'
    fi
} | tee "$OUT"
log "written to ${OUT#"$ROOT"/}"
