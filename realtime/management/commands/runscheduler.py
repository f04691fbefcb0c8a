import asyncio
import signal

from django.core.management.base import BaseCommand, CommandError

from realtime.scheduler import LeaderLock, Scheduler


class Command(BaseCommand):
    help = "Run the feeds when due, sweep the outbox and prune old messages, every tick."

    def add_arguments(self, parser):
        parser.add_argument(
            "--interval",
            type=float,
            help="Seconds between ticks (default: REALTIME['SCHEDULER_TICK']).",
        )
        parser.add_argument(
            "--once", action="store_true", help="Run every feed once, sweep, prune, and exit."
        )

    def handle(self, *args, interval=None, once=False, **options):
        if interval is not None and interval <= 0:
            raise CommandError(f"--interval must be a number of seconds > 0, not {interval}.")
        scheduler = Scheduler(interval=interval)
        if once:
            report = asyncio.run(scheduler.tick(all_due=True))
            self.stdout.write(
                f"feeds run: {len(report.feeds_run)}, published: {len(report.published)}, "
                f"failed: {len(report.failed)}, swept: {report.swept}, pruned: {report.pruned}"
            )
            if report.failed:
                raise CommandError(f"Feeds failed: {', '.join(report.failed)} (see the log).")
            return
        asyncio.run(self._run(scheduler))

    async def _run(self, scheduler: Scheduler) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await scheduler.run(stop, lock=LeaderLock())
