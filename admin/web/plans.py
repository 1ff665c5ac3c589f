"""The plan the pages, the API and the metrics show "serving" from, and changes that wait for it.

"Serving" is dnsd.serving's verdict as the plan that answers holds it: the live plan when dnsd runs
in this process and hands its holder in (ctx.plan), else a plan built on the spot from the table by
the same pure builder (the web running alone). `change` runs a store operation and then waits,
briefly, until the live plan has it: a page or an API answer that follows a disable never says
"serving" for a moment longer than the DNS does.
"""

from __future__ import annotations

from dnsd import models
from dnsd.plan import build_plan, load_rows

WAIT_MIN = 2.0               # seconds a change waits at most for the live plan


def live(ctx):
    """The live plan of this process, or None."""
    holder = ctx.plan
    return getattr(holder, "current", None) if holder is not None else None


async def current(ctx):
    """The plan to show: the live one, else one built from the table now (off the reactor)."""
    plan = live(ctx)
    if plan is not None:
        return plan
    cfg, now = ctx.cfg, ctx.now()
    return await ctx.pool.run_readonly(lambda conn: build_plan(load_rows(conn, now), cfg, now))


def built_here(ctx, conn):
    """In a thd: the plan to show, built from `conn` when there is no live plan."""
    plan = live(ctx)
    if plan is not None:
        return plan
    now = ctx.now()
    return build_plan(load_rows(conn, now), ctx.cfg, now)


async def change(ctx, op):
    """Run `op(conn)` in one transaction, then wait until the live plan holds its version (at
    most a few poll intervals; the DNS catches up on its own after that). Returns op's result."""
    def thd(conn):
        return op(conn), models.current_version(conn)

    result, version = await ctx.pool.run(thd)
    holder = ctx.plan
    wait = getattr(holder, "wait_for", None)
    if wait is not None and getattr(holder, "kick", None) is not None:
        timeout = max(WAIT_MIN, 3 * ctx.cfg.dns.poll_interval)
        await wait(version, ctx.clock, timeout)
    return result
