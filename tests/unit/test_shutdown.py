"""Stopping on SIGTERM when asyncio's self-pipe is full (controllers/shutdown.py): the signal still stops
the loop, where asyncio's own signal handler never hears it. Each case runs in a child interpreter, so the
signals never reach pytest."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

SCENARIO = textwrap.dedent("""
    import asyncio, os, signal, socket, sys, time
    sys.path.insert(0, "operator")
    from kubemam.controllers import shutdown

    shutdown.EXIT_SECONDS = 60  # the deadline must not be what ends this run
    heard = []

    async def main():
        loop = asyncio.get_running_loop()
        if sys.argv[1] == "asyncio":
            loop.add_signal_handler(signal.SIGTERM, lambda: heard.append("asyncio") or shutdown.STOP.set())
        else:
            loop.add_signal_handler(signal.SIGTERM, lambda: heard.append("asyncio"))  # as Kopf does
            shutdown.install()
        # Fill the self-pipe while the loop is busy, as a burst of finished handler threads does.
        csock = loop._csock
        csock.setblocking(False)
        try:
            while True:
                csock.send(b"\\0")
        except BlockingIOError:
            pass
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)
        try:
            await asyncio.wait_for(shutdown.STOP.wait(), timeout=3)
            print("stopped", heard)
        except TimeoutError:
            print("missed", heard)

    asyncio.run(main())
""")


def _run(mode: str) -> str:
    done = subprocess.run([sys.executable, "-c", SCENARIO, mode], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_a_sigterm_asyncio_cannot_hear_still_stops_the_operator() -> None:
    assert _run("asyncio") == "missed []"  # the control: asyncio's handler alone loses the signal
    assert _run("ours").startswith("stopped")


def test_a_stop_that_hangs_ends_the_process_at_the_deadline() -> None:
    code = textwrap.dedent("""
        import sys, threading, time
        sys.path.insert(0, "operator")
        from kubemam.controllers import shutdown
        threading.Thread(target=shutdown._exit_later, args=("SIGTERM", 0.5), daemon=True).start()
        time.sleep(30)
    """)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and time.monotonic() - started < 20
