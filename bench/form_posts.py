"""Signup form posts per second: the mailer under gunicorn on SQLite, against a bare Flask app.

What it measures
    Throughput (posts/s) and client-side latency (p50, p99) of ``POST /gids/mini-guide`` on
    the mailer, served by ``gunicorn -w 2`` (sync workers) on a fresh SQLite file, and the same
    for ``bench/bare_app.py``: a minimal Flask app that checks the e-mail field with a regex
    and inserts one row with the ``sqlite3`` module (WAL, busy timeout, one connection per
    worker). Each mailer post runs the real thing: CSRF check, form validation
    (email-validator), the signed form-time check, the rate limiter, and one transaction that
    writes a lead, a consent event and an outbox row. No mail worker runs, so the outbox rows
    just accumulate. Both apps get the same load: CLIENTS client processes (default 2, one per
    worker: on a 2-core machine more clients only take CPU away from the servers), each with
    one http.client connection (gunicorn's sync workers close it after every answer, so each
    post also pays a TCP connect on loopback), that first GET the form once for the session
    cookie and the hidden ``csrf_token`` and ``started`` values, send WARMUP posts, then wait
    for the others and send POSTS posts in all, every one with a new address. Any answer but
    303, and any connection error, counts as an error and is reported. A measurement stops
    early after TIME_LIMIT seconds. The pair is measured RUNS times, in alternating order,
    each run on fresh databases and freshly started servers (the mailer slows down a little
    as its tables grow). The script prints each run, the medians, and the ratio mailer/bare
    of the median throughputs, plus the CPU time per post spent in the gunicorn workers and
    in the clients (all on the same cores), and the row counts as a check.

How to run it (from the project root, with the dev extra installed, which brings gunicorn)
    .venv/bin/python bench/form_posts.py [--posts N] [--clients N] [--runs N]

    It takes about a minute (3 runs of 3,000 posts per app). Everything lives in a temporary
    directory that is removed afterwards; the only traffic is on 127.0.0.1.

Target
    mailer/bare >= 0.5: the mailer handles at least half as many signup posts per second as
    the bare app on the same machine. The exit status is 0 either way (it is a measurement,
    not a test); 1 only when the setup fails or an app answers with errors.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing as mp
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
HOST = "127.0.0.1"
SLUG = "mini-guide"
WORKERS = 2
CLIENTS = 2  # one per gunicorn worker: on 2 cores, more clients only take CPU from the servers
WARMUP = 200  # posts, split over the clients, before each measurement
POSTS = 3000  # measured posts per app per run, split over the clients
RUNS = 3
TIME_LIMIT = 60.0  # seconds per measurement at most
START_TIMEOUT = 30.0  # seconds for gunicorn to answer
TARGET = 0.5
LAYERS = [("no-db", "database"), ("skeleton", "database,limiter,csrf")]  # see bench/layered_app.py

TOKEN_FIELD = re.compile(r'name="(csrf_token|started)" type="hidden" value="([^"]+)"')


# --- the load generator (runs in client processes) ------------------------------------------

@dataclass
class ClientResult:
    ok: int = 0
    errors: dict = field(default_factory=dict)  # "status 400" / "ConnectionResetError" -> count
    latencies: list = field(default_factory=list)  # seconds, measured posts only
    started: float = 0.0
    finished: float = 0.0
    cpu: float = 0.0  # this client's CPU seconds during the measured posts
    setup_error: str | None = None


def _cookies(response, jar: dict) -> None:
    for header in response.headers.get_all("Set-Cookie") or []:
        name, _, value = header.split(";", 1)[0].partition("=")
        jar[name.strip()] = value.strip()


def _client(port: int, tag: str, warmup: int, posts: int, ready, go, deadline_box, out) -> None:
    """One visitor: GET the form once, then post `warmup` + `posts` times on one connection."""
    result = ClientResult()
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    jar: dict[str, str] = {}
    try:
        conn.request("GET", f"/gids/{SLUG}")
        page = conn.getresponse()
        html = page.read().decode()
        _cookies(page, jar)
        tokens = dict(TOKEN_FIELD.findall(html))
        if page.status != 200 or set(tokens) != {"csrf_token", "started"}:
            raise RuntimeError(f"form page: status {page.status}, hidden fields {sorted(tokens)}")
    except Exception as exc:  # reported by the parent
        result.setup_error = f"{type(exc).__name__}: {exc}"
        ready.put(False)
        out.put(result)
        return

    def post(i: int, measured: bool) -> None:
        body = urlencode({
            **tokens, "first_name": "Bench", "email": f"b-{tag}-{i}@example.nl",
        })
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": "; ".join(f"{k}={v}" for k, v in jar.items()),
        }
        t0 = time.perf_counter()
        try:
            conn.request("POST", f"/gids/{SLUG}", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            key = type(exc).__name__
            result.errors[key] = result.errors.get(key, 0) + 1
            return
        elapsed = time.perf_counter() - t0
        _cookies(response, jar)
        if response.status == 303:
            result.ok += 1
        else:
            key = f"status {response.status}"
            result.errors[key] = result.errors.get(key, 0) + 1
        if measured:
            result.latencies.append(elapsed)

    for i in range(warmup):
        post(i, measured=False)
    warm = (result.ok, dict(result.errors))
    result.ok, result.errors = 0, {}
    ready.put(warm)
    go.wait(TIME_LIMIT)
    deadline = deadline_box.value
    cpu0 = time.process_time()
    result.started = time.perf_counter()
    for i in range(warmup, warmup + posts):
        if time.perf_counter() > deadline:
            break
        post(i, measured=True)
    result.finished = time.perf_counter()
    result.cpu = time.process_time() - cpu0
    conn.close()
    out.put(result)


# --- servers --------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen
    log: Path

    def worker_cpu(self) -> float:
        """CPU seconds (user + system) used so far by this gunicorn's worker processes."""
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == self.process.pid:  # ppid
                total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / tick

    def worker_pids(self) -> list[int]:
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[1]) == self.process.pid:
                    pids.append(int(entry))
        return pids


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("MAILER_", "BENCH_"))}


def start_gunicorn(name: str, app: str, env: dict[str, str], cwd: Path, logs: Path,
                   extra: list[str] = ()) -> Server:
    port = free_port()
    log = logs / f"{name}-gunicorn.log"
    command = [
        sys.executable, "-m", "gunicorn", "-w", str(WORKERS), "-k", "sync",
        "-b", f"{HOST}:{port}", "--log-level", "warning", *extra, app,
    ]
    with open(log, "wb") as handle:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    server = Server(name, port, process, log)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name}: gunicorn exited with {process.returncode}:\n{_tail(log)}")
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=2)
            conn.request("GET", f"/gids/{SLUG}")
            status = conn.getresponse().status
            conn.close()
            if status == 200 and len(server.worker_pids()) == WORKERS:
                return server
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{name}: gunicorn did not answer within {START_TIMEOUT:.0f}s:\n{_tail(log)}")


def stop(server: Server | None) -> None:
    if server is None or server.process.poll() is not None:
        return
    server.process.send_signal(signal.SIGTERM)  # gunicorn's master stops its own workers
    try:
        server.process.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(server.process.pid, signal.SIGKILL)  # its own session: master and workers only
        server.process.wait(5)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start_mailer(tmp: Path, name: str = "mailer", switched_off: str = "") -> Server:
    """The real app; with `switched_off`, bench/layered_app.py's variant of it."""
    env = _clean_env()
    env.update({
        "MAILER_INSTANCE_PATH": str(tmp / f"app-{name}" / "instance"),
        "MAILER_SECRET_KEY": "bench-secret-key-0123456789abcdef",  # 33 characters
        "MAILER_FORM_MIN_SECONDS": "0",
        "MAILER_SIGNUP_RATE_LIMIT": "1000000 per minute",
        "BENCH_SWITCH_OFF": switched_off,
    })
    (tmp / f"app-{name}").mkdir()  # not tmp/mailer: gunicorn's cwd would shadow the package
    # cwd = the temp dir, so a developer's .env in the project root does not change the setup.
    mailer_cli = Path(sys.executable).parent / "mailer"
    upgrade = [str(mailer_cli)] if mailer_cli.exists() else [sys.executable, "-m", "mailer.cli"]
    done = subprocess.run([*upgrade, "db", "upgrade"], cwd=tmp, env=env, capture_output=True, text=True,
                          timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"mailer db upgrade failed:\n{done.stdout}{done.stderr}")
    if not switched_off:
        return start_gunicorn(name, "mailer.wsgi:app", env, cwd=tmp, logs=tmp)
    return start_gunicorn(name, "layered_app:app", env, cwd=tmp, logs=tmp, extra=["--pythonpath", str(BENCH)])


def start_bare(tmp: Path) -> Server:
    env = _clean_env()
    env["BENCH_BARE_DB"] = str(tmp / "bare" / "bare.db")
    (tmp / "bare").mkdir()
    return start_gunicorn("bare", "bare_app:app", env, cwd=tmp, logs=tmp, extra=["--pythonpath", str(BENCH)])


# --- one measurement ------------------------------------------------------------------------

@dataclass
class Measurement:
    app: str
    run: int
    posts: int
    seconds: float
    errors: dict
    warmup_errors: dict
    p50_ms: float
    p99_ms: float
    server_cpu_ms: float  # gunicorn workers' CPU per post
    client_cpu_ms: float  # load generator's CPU per post

    @property
    def rate(self) -> float:
        return self.posts / self.seconds if self.seconds else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values()) + sum(self.warmup_errors.values())

    def line(self) -> str:
        merged = dict(self.warmup_errors)
        for key, count in self.errors.items():
            merged[key] = merged.get(key, 0) + count
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(merged.items()))
        return (f"run {self.run}  {self.app:<6}  {self.rate:7.1f} posts/s  p50 {self.p50_ms:6.1f} ms  "
                f"p99 {self.p99_ms:6.1f} ms  {self.posts} posts in {self.seconds:5.2f}s  "
                f"server CPU {self.server_cpu_ms:5.2f} ms/post  client CPU {self.client_cpu_ms:5.2f} ms/post  "
                f"errors {self.error_count}{f' ({errors})' if errors else ''}")


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def measure(server: Server, run: int, clients: int, posts: int, tag: str) -> Measurement:
    ctx = mp.get_context("fork")
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    deadline = ctx.Value("d", 0.0)
    share, extra = divmod(posts, clients)
    warm_share = WARMUP // clients
    procs = [
        ctx.Process(target=_client, args=(
            server.port, f"{tag}-{server.name}-{run}-{c}", warm_share, share + (c < extra),
            ready, go, deadline, out,
        ), daemon=True)
        for c in range(clients)
    ]
    warmup_errors: dict[str, int] = {}
    try:
        for p in procs:
            p.start()
        for _ in procs:
            warm = ready.get(timeout=TIME_LIMIT + 30)
            if warm is False:
                raise RuntimeError(f"{server.name}: a client could not load the form:\n"
                                   f"{out.get(timeout=5).setup_error}\n{_tail(server.log)}")
            for key, count in warm[1].items():
                warmup_errors[key] = warmup_errors.get(key, 0) + count
        cpu0 = server.worker_cpu()
        t0 = time.perf_counter()
        deadline.value = t0 + TIME_LIMIT
        go.set()
        results = [out.get(timeout=TIME_LIMIT + 30) for _ in procs]
        end = max(r.finished for r in results)
        cpu1 = server.worker_cpu()
    finally:
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
    errors: dict[str, int] = {}
    latencies: list[float] = []
    for r in results:
        latencies += r.latencies
        for key, count in r.errors.items():
            errors[key] = errors.get(key, 0) + count
    done = sum(r.ok for r in results)
    attempts = done + sum(errors.values())
    return Measurement(
        app=server.name, run=run, posts=done, seconds=end - t0, errors=errors, warmup_errors=warmup_errors,
        p50_ms=_percentile(latencies, 0.50) * 1000, p99_ms=_percentile(latencies, 0.99) * 1000,
        server_cpu_ms=(cpu1 - cpu0) * 1000 / max(attempts, 1),
        client_cpu_ms=sum(r.cpu for r in results) * 1000 / max(attempts, 1),
    )


def _counts(tmp: Path) -> str:
    parts = []
    try:
        with sqlite3.connect(tmp / "app-mailer" / "instance" / "mailer.db", timeout=5) as conn:
            parts.append("mailer db: " + ", ".join(
                f"{conn.execute(f'SELECT count(*) FROM {t}').fetchone()[0]} {t}"
                for t in ("leads", "consent_events", "outbox")))
        with sqlite3.connect(tmp / "bare" / "bare.db", timeout=5) as conn:
            parts.append(f"bare db: {conn.execute('SELECT count(*) FROM signups').fetchone()[0]} signups")
    except sqlite3.Error as exc:
        parts.append(f"(could not count rows: {exc})")
    return "; ".join(parts)


# --- main -----------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posts", type=int, default=POSTS, help=f"measured posts per app per run ({POSTS})")
    parser.add_argument("--clients", type=int, default=CLIENTS, help=f"client processes ({CLIENTS})")
    parser.add_argument("--runs", type=int, default=RUNS, help=f"runs of the pair ({RUNS})")
    parser.add_argument("--layers", action="store_true",
                        help="also measure the mailer without its database work, and without database, "
                             "rate limit and CSRF (the Flask/WTForms skeleton): where the time goes")
    args = parser.parse_args()
    posts = max(1, min(args.posts, 100_000))
    clients = max(1, min(args.clients, 64))
    runs = max(1, min(args.runs, 20))

    began = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="mailer-bench-"))
    tag = uuid.uuid4().hex[:8]
    servers: list[Server] = []
    results: list[Measurement] = []
    counts: list[str] = []
    try:
        print(f"{clients} clients, {WARMUP} warm-up + {posts} measured posts per app per run, {runs} runs "
              f"(fresh databases and servers each), at most {TIME_LIMIT:.0f}s per measurement; "
              f"gunicorn -w {WORKERS} (sync) for both apps; {os.cpu_count()} CPUs; work dir {tmp}", flush=True)
        variants = [("mailer", "")] + (LAYERS if args.layers else [])
        for run in range(1, runs + 1):
            where = tmp / f"run{run}"
            where.mkdir()
            servers = [start_mailer(where, name, off) for name, off in variants] + [start_bare(where)]
            for server in (servers if run % 2 else servers[::-1]):
                m = measure(server, run, clients, posts, tag)
                results.append(m)
                print(m.line(), flush=True)
                if m.error_count:
                    print(f"  {server.name} gunicorn log (tail):\n{_tail(server.log, 15)}", flush=True)
            for server in servers:
                stop(server)
            servers = []
            counts.append(f"run {run}: {_counts(where)}")
    except Exception as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        for server in servers:
            stop(server)
        shutil.rmtree(tmp, ignore_errors=True)

    def med(app: str, attr: str) -> float:
        return statistics.median(getattr(m, attr) for m in results if m.app == app)

    mailer_rate, bare_rate = med("mailer", "rate"), med("bare", "rate")
    ratio = mailer_rate / bare_rate if bare_rate else 0.0
    errors = sum(m.error_count for m in results)
    elapsed = time.perf_counter() - began
    print()
    python = Path(sys.executable)
    python = python.relative_to(ROOT) if python.is_relative_to(ROOT) else python
    print(f"command: {python} bench/form_posts.py --posts {posts} --clients {clients} "
          f"--runs {runs}{' --layers' if args.layers else ''}")
    print("summary (medians over runs):")
    for app in [name for name, _ in variants] + ["bare"]:
        print(f"  {app:<6}  {med(app, 'rate'):7.1f} posts/s   p50 {med(app, 'p50_ms'):6.1f} ms   "
              f"p99 {med(app, 'p99_ms'):6.1f} ms   server CPU {med(app, 'server_cpu_ms'):5.2f} ms/post   "
              f"client CPU {med(app, 'client_cpu_ms'):5.2f} ms/post")
    print(f"  ratio mailer/bare  {ratio:.2f}   (target >= {TARGET}: {'met' if ratio >= TARGET else 'NOT met'})")
    for name, off in variants[1:]:
        print(f"  ratio {name}/bare  {med(name, 'rate') / bare_rate:.2f}   (switched off: {off})")
    print(f"  errors (non-303 or connection)  {errors}")
    for line in counts:
        print(f"  rows after {line}")
    print(f"  took {elapsed:.1f}s")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
