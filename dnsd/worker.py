"""Run the DNS server alone (no probes, no admin), for benchmarks and DNS-only nodes.

    python -m dnsd.worker --config mirrordns.toml              # [dns] workers processes
    python -m dnsd.worker --config mirrordns.toml --workers 2  # override the count
    python -m dnsd.worker --config mirrordns.toml --single     # exactly this one process

With more than one worker every process binds the `[dns] listen` addresses with SO_REUSEPORT and
builds its own plan from the same table. `--ready` writes "ready" on stdout once the first
plan is live, which scripts and tests can wait for.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dnsd.worker", description=__doc__.split("\n")[0])
    ap.add_argument("--config", help="config file (else $MIRRORDNS_CONFIG, else ./mirrordns.toml)")
    ap.add_argument("--workers", type=int, default=None, help="processes (default: [dns] workers)")
    ap.add_argument("--single", action="store_true",
                    help="serve in this process only, with SO_REUSEPORT (used for the extra workers)")
    ap.add_argument("--ready", action="store_true", help="print 'ready' once the first plan is live")
    ap.add_argument("--slot", type=int, default=0,
                    help="this process's number among the workers (names its plan snapshot)")
    args = ap.parse_args(argv)

    from dnsd.config import load_config

    cfg = load_config(args.config)
    n = args.workers if args.workers is not None else cfg.dns.workers
    children = []
    if not args.single and n > 1 and cfg.dns.cookies and not cfg.dns.cookie_secret_file:
        import secrets

        from dnsd.service import COOKIE_SECRET_ENV

        os.environ.setdefault(COOKIE_SECRET_ENV, secrets.token_hex(16))   # one for all workers
    if not args.single and n > 1:
        path = os.path.abspath(cfg.path) if cfg.path else None
        if path is None:
            print("more than one worker needs a config file", file=sys.stderr)
            return 2
        for k in range(1, n):
            children.append(subprocess.Popen(
                [sys.executable, "-m", "dnsd.worker", "--config", path, "--single", "--ready",
                 "--slot", str(k)], stdout=subprocess.PIPE))
        for c in children:                 # "ready" below means every worker has its plan
            if c.stdout.readline().strip() != b"ready":
                print("a DNS worker did not start; see its log above", file=sys.stderr)
                for k in children:
                    if k.poll() is None:
                        k.terminate()
                return 1

    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from dnsd.db import open_pool
    from dnsd.server import ListenError
    from dnsd.service import DNSService

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)])
    pool = open_pool(cfg, reactor)
    pool.start()
    svc = DNSService(cfg, pool, reactor, reuse_port=args.single or n > 1, spawn_workers=False,
                     slot=args.slot)
    try:
        svc.privilegedStartService()            # bind now: a busy port is one line, not a trace
    except ListenError as e:
        print(f"mirrordns: {e}", file=sys.stderr)
        pool.stop()
        for c in children:
            c.terminate()
        return 2

    if args.ready:
        def wait_ready():
            if svc.plan.table is not None:
                os.write(1, b"ready\n")
            else:
                reactor.callLater(0.05, wait_ready)
        reactor.callWhenRunning(wait_ready)

    def stop_children():
        for c in children:
            if c.poll() is None:
                c.send_signal(signal.SIGTERM)
        for c in children:
            try:
                c.wait(5)
            except subprocess.TimeoutExpired:
                c.kill()

    reactor.callWhenRunning(svc.startService)
    reactor.addSystemEventTrigger("before", "shutdown", svc.stopService)
    reactor.addSystemEventTrigger("after", "shutdown", stop_children)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
