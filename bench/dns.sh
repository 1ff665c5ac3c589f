#!/usr/bin/env bash
# DNS benchmark: the project's server against gdnsd (the speed reference) and PowerDNS LUA records
# (the peer that, like us, does geo and health in the server), one after the other in one run, on
# loopback, same mmdb, same zone content, same dnsperf query mix with ECS. Each server is pinned to
# one core (taskset -c $SERVER_CPU), dnsperf to the other ($CLIENT_CPU). Then the spread mix:
# gdnsd and mirrordns on the GeoLite2 City database, a paced load from bench/dnsload.py with a fresh
# ECS /24 per query, a fresh ECS /56 per query and one ECS repeated, server CPU per answered query
# from /proc; and mirrordns once more while its geo index is rebuilt. See docs/benchmarks.md.
#
# Usage: bench/dns.sh            (or `make bench-dns`; everything below can be set from the environment)
#   BENCH_DNS_DURATION=10        seconds of each max-rate dnsperf run
#   BENCH_DNS_LAT_DURATION=5     seconds of each latency run (at half the measured max rate)
#   BENCH_DNS_ROUNDS=2           rounds over all servers, interleaved; each server's best round counts
#   BENCH_DNS_CLIENTS=4          dnsperf -c
#   BENCH_DNS_OUTSTANDING=100    dnsperf -q
#   BENCH_DNS_SERVERS="gdnsd pdns mirrordns mirrordns-2w gdnsd-city mirrordns-city"   which runs, in this order
#   BENCH_DNS_SPREAD_RATE=15000  queries/s of the spread runs (gdnsd-city, mirrordns-city)
#   BENCH_DNS_SPREAD_DURATION=10 seconds of each spread run
#   BENCH_DNS_SPREAD_MIXES="fresh24 fresh56 repeat"   which spread mixes
#   BENCH_DNS_PACING=steady      bench/dnsload.py --pacing: steady, poisson or burst
#   BENCH_DNS_REBUILD=1          one more mirrordns-city run while the geo index is rebuilt (0: skip)
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
SERVERS=${BENCH_DNS_SERVERS:-"gdnsd pdns mirrordns mirrordns-2w gdnsd-city mirrordns-city"}
SPREAD_RATE=${BENCH_DNS_SPREAD_RATE:-15000}
SPREAD_DURATION=${BENCH_DNS_SPREAD_DURATION:-10}
SPREAD_MIXES=${BENCH_DNS_SPREAD_MIXES:-"fresh24 fresh56 repeat"}
PACING=${BENCH_DNS_PACING:-steady}
REBUILD=${BENCH_DNS_REBUILD:-1}
BASE_PORT=${BENCH_DNS_PORT:-15300}
SERVER_CPU=0
CLIENT_CPU=1
ECS=8:00011800c00002          # ECS option: family 1 (IPv4), source /24, scope 0, 192.0.2.0 (DE in geo.mmdb)
ZONE=mirrors.example.org
QUERIES=$HERE/queries.txt
# subnets the answer checks use: in the test mmdb (make_mmdb.py), and in GeoLite2 City (2018)
TEST_DE_NET=192.0.2.0/24 TEST_US_NET=198.51.100.0/24
CITY_DE_NET=217.0.0.0/24 CITY_US_NET=8.8.8.0/24      # Deutsche Telekom, Google
DE_NET=$TEST_DE_NET US_NET=$TEST_US_NET

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
    ans=$(q "$port" "www.$ZONE" A +subnet=$DE_NET)
    subset_of "$ans" "$DE_IPS" || echo "www.$ZONE with ECS $DE_NET (DE) answered '${ans//$'\n'/ }', expected DE mirrors ($DE_IPS)"
    ans=$(q "$port" "www.$ZONE" A +subnet=$US_NET)
    subset_of "$ans" "$US_IPS" || echo "www.$ZONE with ECS $US_NET (US) answered '${ans//$'\n'/ }', expected US mirrors ($US_IPS)"
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
    log "$name answers: www(ECS DE)=$(q "$port" "www.$ZONE" A +subnet=$DE_NET | paste -sd,)" \
        "www(ECS US)=$(q "$port" "www.$ZONE" A +subnet=$US_NET | paste -sd,)" \
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
        -e "s#@WORKERS@#${WORKERS:-1}#g" -e "s#@PORT@#$PORT#g" -e "s#@MMDB@#$MMDB#g" \
        -e "s#@RELOAD@#${RELOAD_INTERVAL:-60}#g" "$1" > "$2"
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
if awk -v l="${LOAD_START%% *}" 'BEGIN {exit !(l > 0.5)}'; then
    log "WARNING: load average $LOAD_START before starting: other work shares these cores, expect noisy figures"
fi

# --- shared fixtures: the geo database, the health endpoints -------------------------------------
log "work dir $WORK"
"$PY" "$HERE/make_mmdb.py" "$WORK/geo.mmdb" \
    || die "could not build the test mmdb (mmdb-writer missing from $PY's venv? run 'make install-test')"
case " $SERVERS " in
    *-city*)
        # the spread runs use a copy (the rebuild run touches it) of the bundled GeoLite2 City
        cp "$("$PY" -c 'from dnsd.geo import bundled_database; print(bundled_database())')" "$WORK/city.mmdb" \
            || die "GeoLite2 City not found (maxminddb-geolite2 missing from $PY's venv? run 'make install-test')"
        log "compiling the geo index of GeoLite2 City once on core $SERVER_CPU, for its time and memory"
        GEO_TIME=$(taskset -c "$SERVER_CPU" "$PY" -m dnsd.geoindex time "$WORK/city.mmdb") \
            || die "python -m dnsd.geoindex time failed"
        log "geo index: $GEO_TIME"
        ;;
esac
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
use_db() {  # use_db LABEL: the geo database and answer-check subnets of that run
    case $1 in
        *-city) MMDB=$WORK/city.mmdb DE_NET=$CITY_DE_NET US_NET=$CITY_US_NET ;;
        *) MMDB=$WORK/geo.mmdb DE_NET=$TEST_DE_NET US_NET=$TEST_US_NET ;;
    esac
}

run_gdnsd() {  # run_gdnsd LABEL: gdnsd (test mmdb, dnsperf) or gdnsd-city (GeoLite2 City, spread mix)
    local label=$1
    PORT=$GDNSD_PORT
    use_db "$label"
    rm -rf "$WORK/gdnsd"
    cp -r "$HERE/gdnsd" "$WORK/gdnsd"
    render "$HERE/gdnsd/config" "$WORK/gdnsd/config"
    gdnsd -c "$WORK/gdnsd" checkconf >"$WORK/$label-checkconf.log" 2>&1 \
        || die "gdnsd checkconf failed: $(tail -n 5 "$WORK/$label-checkconf.log")"
    start "$label" "$SERVER_CPU" gdnsd -c "$WORK/gdnsd" start
    wait_up "$label" "$PORT" "$LASTPID"
    check_answers "$label" "$PORT"
    case $label in
        *-city) spread "$label" "$PORT" "$LASTPID" ;;
        *) measure "$label" "$PORT" "$LASTPID" ;;
    esac
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

run_mirrordns() {  # run_mirrordns LABEL WORKERS CPUS: mirrordns, mirrordns-2w (dnsperf), mirrordns-city (spread)
    local label=$1 cpus=$3
    PORT=$MDNS_PORT
    WORKERS=$2
    use_db "$label"
    RELOAD_INTERVAL=60
    case $label in *-city) RELOAD_INTERVAL=1 ;; esac
    rm -f "$WORK/mirrordns.sqlite"*
    render "$HERE/mirrordns.toml" "$WORK/mirrordns.toml"
    render "$HERE/mirrordns.zone" "$WORK/mirrordns.zone"
    "$PY" "$HERE/setup_db.py" "$WORK/mirrordns.toml" >"$WORK/$label-setup.log" 2>&1 \
        || die "$label: setup_db.py failed: $(tail -n 5 "$WORK/$label-setup.log")"
    # dnsd.worker: the DNS server alone (no probes, no admin web); with workers = 2 it starts a second
    # process (--single) on the same port with SO_REUSEPORT, in the same process group
    start "$label" "$cpus" "$PY" -m dnsd.worker --config "$WORK/mirrordns.toml"
    wait_up "$label" "$PORT" "$LASTPID"
    # answers start at once (geoip2); measure only once the compiled geo index is in (its first
    # build in this run takes seconds, later starts read it from $WORK/geoip)
    wait_log "$label" "geo index of .* in "
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
    case $label in
        *-city)
            spread "$label" "$PORT" "$LASTPID"
            [ "$REBUILD" = 1 ] && [ "$ROUND" = 1 ] && rebuild_run "$label" "$PORT" "$LASTPID"
            GEO_RSS_KB=$(awk '/^VmRSS:/ {print $2}' "/proc/$LASTPID/status")
            grep "geo index of" "$WORK/$label.log" | sed "s/^[^]]*] /round $ROUND: /" >> "$WORK/geo-index.log" || true
            ;;
        *)
            measure "$label" "$PORT" "$LASTPID"
            [ "$label" = mirrordns ] && SMALL_RSS_KB=$(awk '/^VmRSS:/ {print $2}' "/proc/$LASTPID/status")
            ;;
    esac
    stop "$LASTPID"
}

wait_log() {  # wait_log LABEL REGEX: until the server's log has a line matching REGEX (120 s)
    for _ in $(seq 240); do
        grep -qE "$2" "$WORK/$1.log" && return 0
        sleep 0.5
    done
    die "$1: no log line matching '$2' within 120 s (log in $WORK/$1.log)"
}

# Spread runs: per label and mix, the round with the lowest server CPU per answer (S_*), every
# round's figure (S_ALL).
declare -A S_SENT S_ANS S_US S_P99 S_MAX S_BEHIND S_ALL
SPREAD_ORDER=()

load() {  # load LABEL PORT PGID MIX OUT [SECONDS]: one paced run of bench/dnsload.py, its JSON line to OUT
    local label=$1 port=$2 pgid=$3 mix=$4 out=$5 secs=${6:-$SPREAD_DURATION} pids
    pids=$(ps -e -o pgid=,pid= | awk -v g="$pgid" '$1 == g {printf " --pid %s", $2}')
    # shellcheck disable=SC2086  # pids is a list of options
    taskset -c "$CLIENT_CPU" "$PY" "$ROOT/bench/dnsload.py" --server "127.0.0.1:$port" \
        --rate "$SPREAD_RATE" --duration "$secs" --name "www.$ZONE" --mix "$mix" \
        --subnet "$CITY_DE_NET" --pacing "$PACING" $pids >"$out" 2>"$out.err" \
        || die "$label: bench/dnsload.py failed: $(tail -n 5 "$out.err")"
}

field() {  # field JSON_FILE KEY: one value of dnsload's JSON line
    "$PY" -c 'import json, sys; v = json.load(open(sys.argv[1]))[sys.argv[2]]; print("n/a" if v is None else v)' "$1" "$2"
}

spread() {  # spread LABEL PORT PGID: the spread mixes, one paced run each
    local label=$1 port=$2 pgid=$3 mix f us k
    for mix in $SPREAD_MIXES; do
        f="$WORK/out/$label-$mix-r$ROUND.json"
        log "$label: $mix at $SPREAD_RATE q/s ($PACING) for ${SPREAD_DURATION}s (round $ROUND of $ROUNDS)"
        load "$label" "$port" "$pgid" "$mix" "$f"
        us=$(field "$f" server_us_per_answer)
        log "$label: $mix: sent $(field "$f" sent), answered $(field "$f" answered), server $us µs per answer, p99 $(field "$f" p99_ms) ms"
        k="$label $mix"
        [ -n "${S_ALL[$k]:-}" ] || SPREAD_ORDER+=("$k")
        S_ALL[$k]="${S_ALL[$k]:-}${S_ALL[$k]:+ }$us"
        if [ -z "${S_US[$k]:-}" ] || awk -v a="$us" -v b="${S_US[$k]}" 'BEGIN {exit !(a < b)}'; then
            S_US[$k]=$us
            S_SENT[$k]=$(field "$f" sent)
            S_ANS[$k]=$(field "$f" answered)
            S_P99[$k]=$(field "$f" p99_ms)
            S_MAX[$k]=$(field "$f" max_ms)
            S_BEHIND[$k]=$(field "$f" behind)
        fi
    done
}

rebuild_run() {  # rebuild_run LABEL PORT PGID: fresh24 while the mmdb changes and its index is rebuilt
    local label=$1 port=$2 pgid=$3 f="$WORK/out/$1-rebuild.json" before lpid secs
    secs=$(( SPREAD_DURATION > 12 ? SPREAD_DURATION : 12 ))     # the build takes 6-8 s
    before=$(grep -c "geo index of .* built in" "$WORK/$label.log" || true)
    log "$label: fresh24 for ${secs}s while the geo index is rebuilt (the mmdb is touched after 1 s)"
    load "$label" "$port" "$pgid" fresh24 "$f" "$secs" &
    lpid=$!
    sleep 1
    touch "$MMDB"           # a new mtime: within reload_interval (1 s) the server reopens and rebuilds
    wait "$lpid" || die "$label: the rebuild run failed"
    for _ in $(seq 120); do
        [ "$(grep -c "geo index of .* built in" "$WORK/$label.log" || true)" -gt "$before" ] && break
        sleep 0.5
    done
    REBUILD_LINE=$(grep "geo index of .* built in" "$WORK/$label.log" | tail -n 1 | sed 's/.*built in \([0-9.]*\) s.*/\1/')
    [ "$(grep -c "geo index of .* built in" "$WORK/$label.log" || true)" -gt "$before" ] \
        || die "$label: the index was not rebuilt after touching $MMDB (log in $WORK/$label.log)"
    R_REBUILD="${secs}s: sent $(field "$f" sent), answered $(field "$f" answered), server $(field "$f" server_us_per_answer) µs per answer, p50 $(field "$f" p50_ms) ms, p99 $(field "$f" p99_ms) ms, max $(field "$f" max_ms) ms; index rebuilt in $REBUILD_LINE s (child process, same core)"
    log "$label: during the rebuild: $R_REBUILD"
}

# Rounds interleave the servers (gdnsd, pdns, mirrordns, ..., gdnsd, pdns, ...), each started afresh,
# so load from elsewhere that comes and goes hits them all alike; the best round of each counts.
for ROUND in $(seq "$ROUNDS"); do
    for s in $SERVERS; do
        case $s in
            gdnsd) run_gdnsd gdnsd ;;
            pdns) run_pdns ;;
            mirrordns) run_mirrordns mirrordns 1 "$SERVER_CPU" ;;
            # 2 workers need 2 cores, so dnsperf shares its core with one of them (docs/benchmarks.md)
            mirrordns-2w) run_mirrordns mirrordns-2w 2 "$SERVER_CPU,$CLIENT_CPU" ;;
            gdnsd-city) run_gdnsd gdnsd-city ;;
            mirrordns-city) run_mirrordns mirrordns-city 1 "$SERVER_CPU" ;;
            *) die "unknown server '$s' in BENCH_DNS_SERVERS (known: gdnsd pdns mirrordns mirrordns-2w gdnsd-city mirrordns-city)" ;;
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
    [ "${#ORDER[@]}" -eq 0 ] || printf '%-13s %10s %7s %5s %8s %8s %10s %7s %7s %8s\n' server "queries/s" "avg ms" lost "srv CPU" "perf CPU" "half rate" "p50 ms" "p99 ms" "vs gdnsd"
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
    if [ "${#SPREAD_ORDER[@]}" -gt 0 ]; then
        echo
        echo "Spread mix: bench/dnsload.py at $SPREAD_RATE q/s ($PACING) from one UDP socket on core $CLIENT_CPU," \
            "${SPREAD_DURATION}s per run, pre-built queries for www.$ZONE A, ECS per the mix;" \
            "servers on GeoLite2 City (maxminddb-geolite2), pinned to core $SERVER_CPU;" \
            "µs = server CPU (/proc/PID/task/*/schedstat, all threads) per answered query; each server's best round"
        echo "mixes: fresh24 = a new ECS /24 per query, fresh56 = a new ECS /56 per query (RIR blocks), repeat = ECS $CITY_DE_NET every time"
        echo
        printf '%-8s | %8s %8s %6s %7s | %8s %8s %6s %7s | %s\n' mix "sent" "answered" "µs" "p99 ms" \
            "sent" "answered" "µs" "p99 ms" "gdnsd/mirrordns CPU"
        printf '%-8s | %-32s | %-32s |\n' "" "gdnsd" "mirrordns"
        for mix in $SPREAD_MIXES; do
            g="gdnsd-city $mix" m="mirrordns-city $mix"
            ratio=n/a
            if [ -n "${S_US[$g]:-}" ] && [ -n "${S_US[$m]:-}" ]; then
                ratio=$(awk -v a="${S_US[$g]}" -v b="${S_US[$m]}" 'BEGIN {printf "%.2f", a / b}')
            fi
            printf '%-8s | %8s %8s %6s %7s | %8s %8s %6s %7s | %s\n' "$mix" \
                "${S_SENT[$g]:-}" "${S_ANS[$g]:-}" "${S_US[$g]:-}" "${S_P99[$g]:-}" \
                "${S_SENT[$m]:-}" "${S_ANS[$m]:-}" "${S_US[$m]:-}" "${S_P99[$m]:-}" "$ratio"
        done
        if [ -n "${S_US[mirrordns-city fresh24]:-}" ] && [ -n "${S_US[mirrordns-city fresh56]:-}" ]; then
            awk -v a="${S_US[mirrordns-city fresh56]}" -v b="${S_US[mirrordns-city fresh24]}" \
                'BEGIN {printf "mirrordns fresh /56 vs fresh /24 CPU per answer: %.2fx\n", a / b}'
        fi
        if [ "$ROUNDS" -gt 1 ]; then
            for k in "${SPREAD_ORDER[@]}"; do printf 'µs per answer per round, %-23s %s\n' "$k:" "${S_ALL[$k]}"; done
        fi
        [ -z "${R_REBUILD:-}" ] || echo "mirrordns fresh24 during a geo index rebuild: $R_REBUILD"
    fi
    if [ -n "${GEO_TIME:-}" ]; then
        echo
        echo "geo index of GeoLite2 City (python -m dnsd.geoindex time, on core $SERVER_CPU): $GEO_TIME"
        [ -z "${GEO_RSS_KB:-}" ] || echo "mirrordns RSS with GeoLite2 City and its index: $((GEO_RSS_KB / 1024)) MB${SMALL_RSS_KB:+; with the test mmdb: $((SMALL_RSS_KB / 1024)) MB}"
        [ -f "$WORK/geo-index.log" ] && sed 's/^/mirrordns-city log, /' "$WORK/geo-index.log"
    fi
} | tee "$OUT"
log "written to ${OUT#"$ROOT"/}"
