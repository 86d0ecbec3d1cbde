"""`make compose-test`: docker/docker-compose.yml run for real under podman, on images built here.

No image registry is needed: the base images are stand-ins built from Debian packages (a bookworm
minbase root filesystem from debootstrap, cached under PILITO_STANDIN_CACHE), the project image is
docker/Dockerfile built on the stand-in Python (its BASE_IMAGE build argument). Then, each step
printed with its time:
  start the stack in depends_on order, each service healthy before its dependants start;
  register a website served by this script on the host; wait until its pages answer a question;
  check that the runs ran in their own containers (DockerRunLauncher through the podman socket),
  with the settings the daemon passes them; restart postgres and count the rows again; `down`
  leaves nothing running.

podman here has no systemd to schedule healthchecks and (before 4.6) cannot wait for `healthy`, so
this script runs each container's healthcheck itself (`podman healthcheck run`) and starts the
services stage by stage, as docker compose's `condition: service_healthy` would. Needs root,
podman, runc, debootstrap (Debian packages) and podman-compose (installed by make compose-test).
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
COMPOSE_FILE = ROOT / "docker" / "docker-compose.yml"
CACHE = Path(os.environ.get("PILITO_STANDIN_CACHE", "/var/tmp/pilito-standins"))
MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
PROJECT = "pilito"
DEBIAN = "localhost/pilito-standin/debian:bookworm"
PYTHON = "localhost/pilito-standin/python:3.11-slim-bookworm"
POSTGRES = "localhost/pilito-standin/postgres:bookworm"
REDIS = "localhost/pilito-standin/redis:bookworm"
APP = "localhost/pilito-pipeline:latest"
TENANT = "compose"
QUESTION = "When does the lantern workshop repair brass lanterns?"
STAGES = (("postgres", "redis"), ("pipeline",), ("webserver", "daemon", "metrics"))
"""docker-compose.yml's depends_on order (checked against the file before starting)."""
STARTED = time.monotonic()


def step(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:7.1f}s] {message}", flush=True)


def sh(*argv: str, check: bool = True, capture: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=capture, text=True, env=env)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def podman(*argv: str, check: bool = True) -> str:
    return sh("podman", *argv, check=check).stdout


# -- images ---------------------------------------------------------------------------------------

def base_image() -> None:
    """The bookworm minbase root filesystem as a local image (the tarball cached for reruns)."""
    if sh("podman", "image", "exists", DEBIAN, check=False).returncode == 0:
        return
    tarball = CACHE / "bookworm-minbase.tar"
    if not tarball.exists():
        rootfs = CACHE / "rootfs"
        shutil.rmtree(rootfs, ignore_errors=True)
        sh("nice", "-n", "10", "debootstrap", "--variant=minbase", "--include=ca-certificates",
           "bookworm", str(rootfs), MIRROR, capture=False)
        for leftover in [*(rootfs / "var/cache/apt/archives").glob("*.deb"), *(rootfs / "var/lib/apt/lists").glob("*_*")]:
            leftover.unlink()  # the downloaded packages and indexes: not part of an image
        sh("tar", "-C", str(rootfs), "-cf", f"{tarball}.part", ".")
        os.replace(f"{tarball}.part", tarball)
        shutil.rmtree(rootfs)
    podman("import", str(tarball), DEBIAN)


def pip_trust_mounts() -> list[str]:
    """Builds run pip: give it the host's CA bundle (a TLS-inspecting proxy's CA, where there is one)."""
    bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    if not bundle.exists():
        return []
    folder = CACHE / "pip"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(bundle, folder / "ca.crt")
    (folder / "pip.conf").write_text("[global]\ncert = /etc/pilito-pip/ca.crt\n")
    return ["-v", f"{folder}:/etc/pilito-pip:ro", "-v", f"{folder / 'pip.conf'}:/etc/pip.conf:ro"]


def build(tag: str, containerfile: Path, *args: str) -> None:
    sh("nice", "-n", "10", "podman", "build", "--network", "host", *pip_trust_mounts(), *args,
       "-f", str(containerfile), "-t", tag, str(ROOT))
    size = int(podman("image", "inspect", "--format", "{{.Size}}", tag).strip())
    step(f"built {tag} ({size / 1e6:.0f} MB)")


def build_images() -> None:
    base_image()
    build(PYTHON, HERE / "python.Containerfile")
    build(POSTGRES, HERE / "postgres.Containerfile")
    build(REDIS, HERE / "redis.Containerfile")
    build(APP, ROOT / "docker" / "Dockerfile", "--build-arg", f"BASE_IMAGE={PYTHON}")


# -- the stack ------------------------------------------------------------------------------------

def start_podman_service() -> tuple[subprocess.Popen, Path]:
    """podman's Docker-compatible API: what the daemon's DockerRunLauncher talks to."""
    socket = CACHE / "run" / "podman.sock"
    socket.parent.mkdir(parents=True, exist_ok=True)
    socket.unlink(missing_ok=True)
    service = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{socket}"])
    while not socket.exists():
        if service.poll() is not None:
            raise RuntimeError("podman system service exited")
        time.sleep(0.2)
    socket.chmod(0o660)  # podman makes it 0600; Docker's is 0660 for its group (DOCKER_GID)
    return service, socket


def compose_env(socket: Path, site_port: int) -> dict[str, str]:
    return {
        **os.environ,
        "POSTGRES_PASSWORD": "p@ss w:rd/" + secrets.token_hex(4),  # characters a URL would have to escape
        "POSTGRES_IMAGE": POSTGRES,
        "REDIS_IMAGE": REDIS,
        "DOCKER_SOCKET": str(socket),
        "DOCKER_GID": str(socket.stat().st_gid),
        "CRAWL_ALLOWED_HOSTS": "host.containers.internal",
        "CRAWL_RATE_LIMIT_SECONDS": "0",
    }


def compose(env: dict[str, str], *argv: str) -> None:
    sh(sys.executable, "-m", "podman_compose", "-p", PROJECT, "-f", str(COMPOSE_FILE), *argv, env=env)


def container(service: str) -> str:
    names = podman("ps", "-a", "--filter", f"label=com.docker.compose.project={PROJECT}",
                   "--filter", f"label=com.docker.compose.service={service}", "--format", "{{.Names}}").split()
    if len(names) != 1:
        raise RuntimeError(f"expected one container for {service}, found {names}")
    return names[0]


def wait_healthy(services: tuple[str, ...], timeout: float = 600) -> None:
    """Run each service's healthcheck until it passes (what podman's systemd timer would do)."""
    deadline = time.monotonic() + timeout
    pending = list(services)
    while pending:
        pending = [s for s in pending if sh("podman", "healthcheck", "run", container(s), check=False).returncode]
        if pending and time.monotonic() > deadline:
            logs = {s: podman("logs", "--tail", "30", container(s), check=False) for s in pending}
            raise RuntimeError(f"not healthy after {timeout:.0f}s: {pending}\n{logs}")
        if pending:
            time.sleep(3)


def check_stages() -> None:
    import yaml

    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    earlier: set[str] = set()
    for stage in STAGES:
        for name in stage:
            assert set(services[name].get("depends_on", {})) <= earlier, (name, "starts before its dependencies")
        earlier |= set(stage)
    assert earlier == set(services), set(services) - earlier


def up(env: dict[str, str]) -> None:
    check_stages()
    for stage in STAGES:
        compose(env, "up", "-d", "--no-build", "--no-deps", *stage)
        wait_healthy(stage)
        step(f"healthy: {', '.join(stage)}")


def down(env: dict[str, str]) -> None:
    """Run containers first (compose does not know them; they hold the network), then the stack."""
    runs = podman("ps", "-aq", "--filter", "label=dagster/run_id").split()
    if runs:
        podman("rm", "-f", *runs)
    compose(env, "down", "-v")
    left = podman("ps", "-a", "--filter", f"label=com.docker.compose.project={PROJECT}", "--format", "{{.Names}}")
    left += podman("ps", "-a", "--filter", "label=dagster/run_id", "--format", "{{.Names}}")
    assert not left.strip(), f"left running: {left}"
    step(f"down: no container left ({len(runs)} run containers removed)")


# -- the website, the question, the runs ----------------------------------------------------------

PAGES = {
    "index.html": "<h1>Zephyr Lantern Workshop</h1><p>Welcome to the Zephyr Lantern Workshop.</p>"
                  '<p><a href="/repairs.html">Repairs</a> <a href="/courses.html">Courses</a></p>',
    "repairs.html": "<h1>Lantern repairs</h1><p>The lantern workshop repairs brass lanterns every Tuesday"
                    " morning. Bring your lantern before ten; repairs of brass lanterns take a week.</p>"
                    "<p>Glass panes are replaced the same day. We polish copper and brass fittings.</p>",
    "courses.html": "<h1>Courses</h1><p>Evening courses teach glass cutting and soldering to beginners."
                    " Each course runs for six weeks and costs forty euros.</p>",
}


BIG_SITE_PAGES = 60
"""The second site: enough pages that its page run is still embedding when it is killed."""


def big_site_pages() -> dict[str, str]:
    topics = ("glass", "brass", "copper", "wicks", "oil", "candles", "lenses", "hinges", "paint", "solder")
    pages = {f"big/{n}.html": f"<h1>Note {n}</h1>" + "".join(
        f"<p>Workshop note {n}.{k}: the {topics[(n + k) % 10]} of lantern {n * 7 + k} was checked,"
        f" cleaned and measured at {n + k} millimetres before the {topics[k % 10]} was fitted again.</p>"
        for k in range(12)) for n in range(BIG_SITE_PAGES)}
    pages["big/index.html"] = "".join(f'<a href="/big/{n}.html">note {n}</a> ' for n in range(BIG_SITE_PAGES))
    return pages


def serve_site() -> tuple[http.server.ThreadingHTTPServer, int]:
    """The tenants' websites, on the host: containers reach them as host.containers.internal."""
    folder = CACHE / "site"
    (folder / "big").mkdir(parents=True, exist_ok=True)
    for name, body in {**PAGES, **big_site_pages()}.items():
        (folder / name).write_text(f"<!doctype html><html><head><title>{name}</title></head><body>{body}</body></html>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("0.0.0.0", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def cli(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return sh("podman", "exec", container("pipeline"), "pilito-pipeline", *argv, check=check)


def wait_for_answer(url: str, tenant: str = TENANT, question: str = QUESTION, timeout: float = 1800) -> None:
    """Ask until the answer cites `url` (crawled, chunked and embedded by the runs)."""
    deadline = time.monotonic() + timeout
    while url not in cli("ask", "--tenant", tenant, "--json", question, check=False).stdout:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no answer citing {url} after {timeout:.0f}s:\n{cli('status', '--tenant', tenant).stdout}")
        time.sleep(10)
    step(f"asked {question!r}: the answer cites {url}")


def run_containers() -> list[dict]:
    ids = podman("ps", "-aq", "--filter", "label=dagster/run_id").split()
    return json.loads(podman("inspect", *ids)) if ids else []


def check_run_containers(env: dict[str, str]) -> None:
    """Each run in its own container of the project image, with the settings the daemon passes."""
    runs = run_containers()
    assert runs, "no run container: the DockerRunLauncher launched nothing"
    for run in runs:
        labels, variables = run["Config"]["Labels"], dict(v.split("=", 1) for v in run["Config"]["Env"])
        assert run["ImageName"].endswith("pilito-pipeline:latest"), run["ImageName"]
        assert run["State"]["ExitCode"] == 0 or run["State"]["Running"], (labels["dagster/run_id"], run["State"])
        assert variables["PGPASSWORD"] == env["POSTGRES_PASSWORD"], "password not passed to the run"
        assert variables["CRAWL_ALLOWED_HOSTS"] == env["CRAWL_ALLOWED_HOSTS"]
        assert variables["DAGSTER_RUN_JOB_NAME"] == labels["dagster/job_name"]
    jobs = sorted({run["Config"]["Labels"]["dagster/job_name"] for run in runs})
    step(f"{len(runs)} runs ran in their own containers (DockerRunLauncher via the podman socket): {jobs}")


def check_daemon_socket_access(socket: Path) -> None:
    """The daemon (user pilito, DOCKER_GID added) reaches the engine's API, as the launcher will."""
    groups = podman("exec", container("daemon"), "id", "-G").split()
    assert str(socket.stat().st_gid) in groups, f"daemon not in the socket's group {socket.stat().st_gid}: {groups}"
    podman("exec", container("daemon"), "python", "-c", "import docker; assert docker.from_env().ping()")
    step(f"daemon reaches the podman API through {socket} (group {socket.stat().st_gid})")


ROW_COUNT = ("SELECT (SELECT count(*) FROM websites) || ' ' || (SELECT count(*) FROM pages) || ' '"
             " || (SELECT count(*) FROM tenant_knowledge)")


def count_rows() -> str:
    return podman("exec", container("postgres"), "psql", "-h", "127.0.0.1", "-U", "pilito", "-d", "pilito",
                  "-tAc", ROW_COUNT).strip()


def restart_postgres() -> None:
    before = count_rows()
    podman("restart", container("postgres"))
    wait_healthy(("postgres",))
    after = count_rows()
    assert after == before, (before, after)
    step(f"postgres restarted: rows (websites pages knowledge) {before} before and after")


EMBEDDING_STARTED = 'Started execution of step "chunk_embeddings"'
"""In a run container's log: a page run (the only runs with that step) has begun embedding."""


def container_log(name: str) -> str:
    logged = sh("podman", "logs", name)
    return logged.stdout + logged.stderr


def kill_while_embedding(timeout: float = 1200) -> tuple[str, str]:
    """Kill the first page run container seen embedding; (container, run id)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run in run_containers():
            if run["State"]["Running"] and EMBEDDING_STARTED in container_log(run["Id"]):
                if sh("podman", "kill", run["Id"], check=False).returncode == 0:  # else it just ended
                    return run["Id"], run["Config"]["Labels"]["dagster/run_id"]
        time.sleep(1)
    raise RuntimeError(f"no page run seen embedding in {timeout:.0f}s")


def kill_a_page_run(port: int) -> None:
    """Kill a page run's container mid-embedding: run monitoring fails it, the work is relaunched."""
    site = f"http://host.containers.internal:{port}/big/index.html"
    cli("register-website", "--tenant", "relaunch", "--max-depth", "1", site)
    killed, run_id = kill_while_embedding()
    step(f"killed page run {run_id[:8]} (container {killed[:12]}) of tenant relaunch while embedding")
    last = BIG_SITE_PAGES - 1
    wait_for_answer(f"{site.rsplit('/', 1)[0]}/{last}.html", "relaunch", f"lantern {last * 7 + 11}")
    again = [r for r in run_containers() if r["Config"]["Labels"]["dagster/run_id"] == run_id and r["Id"] != killed]
    step(f"the killed run's work was done again: {len(again)} resumed container(s) of run {run_id[:8]}"
         f" (others: new page runs)")


def exercise(env: dict[str, str], socket: Path, port: int) -> None:
    up(env)
    check_daemon_socket_access(socket)
    site = f"http://host.containers.internal:{port}/"
    cli("register-website", "--tenant", TENANT, site)
    step(f"registered {site} for tenant {TENANT}")
    wait_for_answer(f"{site}repairs.html")
    check_run_containers(env)
    kill_a_page_run(port)
    restart_postgres()
    wait_for_answer(f"{site}repairs.html")


def main() -> int:
    os.environ.setdefault("CONTAINERS_CONF", str(HERE / "containers.conf"))
    CACHE.mkdir(parents=True, exist_ok=True)
    build_images()
    service, socket = start_podman_service()
    server, port = serve_site()
    env = compose_env(socket, port)
    try:
        exercise(env, socket, port)
    except BaseException:
        for name in ("daemon", "pipeline"):
            print(f"--- {name} log (tail)\n" + podman("logs", "--tail", "40", container(name), check=False), file=sys.stderr)
        raise
    finally:
        down(env)
        server.shutdown()
        service.terminate()
        service.wait()
    step("compose-test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
