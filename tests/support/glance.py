"""A real OpenStack Glance on 127.0.0.1 for the tests, reached as a site reaches its cloud.

:class:`GlanceServer` writes a configuration folder (sqlite database, file store, the
policy defaults, a paste pipeline without Keystone's ``authtoken`` filter), runs
``glance-manage db_sync`` and serves ``glance.wsgi.api:application`` with gunicorn from
the virtual environment `make test` builds (``VMIC_GLANCE_VENV``, from
``tests/interop/glance/constraints.txt``).

Without Keystone, Glance's ``context`` filter takes the caller's identity from the
``X-Identity-Status``, ``X-Project-Id``, ``X-User-Id`` and ``X-Roles`` headers that
keystonemiddleware would set, so Glance's own policy (owners, members, visibility) stays
on and tests act as several projects. Plain HTTP clients send those headers
(:meth:`GlanceServer.headers`) to :attr:`GlanceServer.url`. openstacksdk cannot: a
clouds.yaml entry has no option for extra request headers. So each identity a client
needs gets a port of its own on the same gunicorn, and :func:`identity_filter_factory`,
first in Glance's pipeline, stands in for the ``authtoken`` filter there: on such a port
it drops whatever identity the client claimed and sets the port's.
:meth:`GlanceServer.write_clouds_yaml` writes an ordinary ``auth_type: none`` entry for
that port, so code under test reads clouds.yaml as it would at a site.

Glance imports this module (``paste.filter_factory``), with its own Python: only the
standard library is imported at the top.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

GLANCE_VERSION = "33.0.0"
DEFAULT_ROLES = "admin,member,reader"
START_TIMEOUT = 60.0
"""Seconds for gunicorn to load Glance and answer ``/healthcheck``."""
STOP_TIMEOUT = 10.0
"""Seconds after SIGTERM before SIGKILL, and again after SIGKILL."""
REQUEST_TIMEOUT = 30.0
IDENTITY_PORTS = 8
"""Ports bound for identities openstacksdk clients act as (one per project and roles)."""

_REPO = Path(__file__).resolve().parents[2]
_IDENTITIES = "identities.json"
# the environ keys that keystonemiddleware sets or strips, by prefix (oslo.context reads these)
_IDENTITY_KEYS = (
    "HTTP_X_IDENTITY_STATUS",
    "HTTP_X_USER",
    "HTTP_X_PROJECT",
    "HTTP_X_TENANT",
    "HTTP_X_DOMAIN",
    "HTTP_X_ROLE",
    "HTTP_X_SERVICE_",
    "HTTP_X_AUTH_TOKEN",
    "HTTP_X_STORAGE_TOKEN",
    "HTTP_X_IS_ADMIN_PROJECT",
    "HTTP_X_SYSTEM_SCOPE",
)


class GlanceMissingError(Exception):
    """Glance's virtual environment is not installed where the tests look."""


def glance_bin_dir() -> Path:
    """The Glance venv's executables: ``VMIC_GLANCE_VENV``, else where `make test` puts them."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    default = cache / "vmic-test-glance" / "venv" / "bin"
    bin_dir = Path(os.environ.get("VMIC_GLANCE_VENV") or default)
    for tool in ("gunicorn", "glance-manage"):
        if not os.access(bin_dir / tool, os.X_OK):
            raise GlanceMissingError(f"Glance {GLANCE_VERSION} is not installed in {bin_dir}")
    return bin_dir


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class GlanceServer:
    """One Glance process tree (gunicorn master and worker); use as a context manager.

    ``stop()`` and ``start()`` again keep the database, the store and the ports, so a test
    can take Glance away from a client and give it back.
    """

    def __init__(self, bin_dir: Path, root: Path, *, identity_ports: int = IDENTITY_PORTS):
        self.bin_dir = bin_dir
        self.root = root
        self.etc = root / "etc"
        self.log_path = root / "glance.log"
        self._identity_ports = identity_ports
        self._ports: list[int] = []
        self._process: subprocess.Popen[bytes] | None = None

    # --- life cycle

    def __enter__(self) -> GlanceServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Configure and create the database on first use, then serve until ``stop()``."""
        if self.running:
            return
        self.kill()  # what is left of a Glance that died by itself
        listeners = self._bind()
        if not self.etc.exists():
            self._configure()
            self._run(
                self.bin_dir / "glance-manage",
                "--config-file",
                self.etc / "glance-api.conf",
                "db_sync",
            )
        fds = [sock.fileno() for sock in listeners]
        command = [
            str(self.bin_dir / "gunicorn"),
            *(arg for fd in fds for arg in ("--bind", f"fd://{fd}")),
            "--workers=1",
            "--threads=8",  # gthread: an upload in progress does not hold up other requests
            "--graceful-timeout=5",
            f"--pythonpath={_REPO}",  # for identity_filter_factory
            "--error-logfile=-",
            "glance.wsgi.api:application",
        ]
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=fds,
                cwd=self.root,
                env=self._env(),
                start_new_session=True,  # its own process group: the worker is stopped too
            )
        for sock in listeners:  # gunicorn holds them: once it stops, connections are refused
            sock.close()
        self._wait_until_healthy()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL, to the whole process group, each wait bounded."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the whole process group at once: Glance crashes, requests in flight with it."""
        self._end(signal.SIGKILL)

    def _end(self, first: signal.Signals) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        # after SIGTERM, SIGKILL too: gunicorn's master may be gone and its worker not
        for signum in dict.fromkeys((first, signal.SIGKILL)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signum)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(STOP_TIMEOUT)

    @contextlib.contextmanager
    def stopped(self) -> Iterator[None]:
        """Glance away (connections refused) for the block, back on the same ports after."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    # --- identities and clients

    @property
    def url(self) -> str:
        """Glance's root URL; requests there carry their identity in :meth:`headers`."""
        return f"http://127.0.0.1:{self._ports[0]}"

    def headers(
        self, project: str, roles: str = DEFAULT_ROLES, user: str | None = None
    ) -> dict[str, str]:
        """What keystonemiddleware would pass Glance for a token of ``project`` with ``roles``.

        Glance's default policy makes any caller holding the ``admin`` role an admin of the
        whole cloud (it sees every project's images); pass ``roles="member,reader"`` to act
        as an ordinary project member.
        """
        return {
            "X-Identity-Status": "Confirmed",
            "X-Project-Id": project,
            "X-User-Id": user or f"user-{project}",
            "X-Roles": roles,
        }

    def endpoint(self, project: str, roles: str = DEFAULT_ROLES) -> str:
        """Glance's root URL on the port that acts as ``project`` with ``roles``."""
        path = self.etc / _IDENTITIES
        identities: dict[str, dict[str, str]] = json.loads(path.read_text())
        wanted = self.headers(project, roles)
        for port, headers in identities.items():
            if headers == wanted:
                return f"http://127.0.0.1:{port}"
        free = [str(port) for port in self._ports[1:] if str(port) not in identities]
        if not free:
            raise RuntimeError(
                f"all {self._identity_ports} identity ports are taken; "
                "make the GlanceServer with more identity_ports"
            )
        identities[free[0]] = wanted
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(identities, indent=1))
        partial.replace(path)  # the filter reads it per request: never half written
        return f"http://127.0.0.1:{free[0]}"

    def clouds_entry(self, project: str, roles: str = DEFAULT_ROLES) -> dict[str, Any]:
        """A clouds.yaml entry for openstacksdk: no Keystone, Glance at the identity's port."""
        url = self.endpoint(project, roles)
        return {
            "auth_type": "none",
            "auth": {"endpoint": url},
            "image_endpoint_override": url,
            "region_name": "RegionOne",
        }

    def write_clouds_yaml(
        self, path: Path, name: str, project: str, roles: str = DEFAULT_ROLES
    ) -> Path:
        """Write the entry ``name`` (acting as ``project``) into the clouds.yaml at ``path``."""
        import yaml  # noqa: PLC0415 (the test's Python only: Glance imports this module too)

        document = yaml.safe_load(path.read_text()) if path.exists() else None
        document = document or {}
        document.setdefault("clouds", {})[name] = self.clouds_entry(project, roles)
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        return path

    def request(
        self,
        method: str,
        path: str,
        project: str,
        *,
        roles: str = DEFAULT_ROLES,
        body: bytes | Iterable[bytes] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """One plain HTTP request to Glance as ``project`` (no openstacksdk involved)."""
        connection = http.client.HTTPConnection(
            "127.0.0.1", self._ports[0], timeout=REQUEST_TIMEOUT
        )
        try:
            connection.request(
                method, path, body=body, headers={**self.headers(project, roles), **(headers or {})}
            )
            response = connection.getresponse()
            return Reply(response.status, dict(response.getheaders()), response.read())
        finally:
            connection.close()

    def images(self) -> list[dict[str, Any]]:
        """Every image in Glance, whatever its owner, status, visibility or hiding (as an
        admin: Glance lists hidden images only when asked for them alone)."""
        found: list[dict[str, Any]] = []
        for hidden in ("false", "true"):
            path: str | None = f"/v2/images?limit=100&member_status=all&os_hidden={hidden}"
            while path:
                reply = self.request("GET", path, "vmic-test-admin")
                if reply.status != 200:
                    raise RuntimeError(f"listing images: HTTP {reply.status} {reply.body[:300]!r}")
                page = reply.json()
                found.extend(page["images"])
                path = page.get("next")
        return found

    def reset(self) -> None:
        """Delete every image, and the files Glance left behind in its stores (a crash in
        the middle of an upload leaves one), so the next test starts from an empty Glance."""
        for image in self.images():
            path = f"/v2/images/{image['id']}"
            if image.get("protected"):
                patch = json.dumps([{"op": "replace", "path": "/protected", "value": False}])
                self.request(
                    "PATCH",
                    path,
                    "vmic-test-admin",
                    body=patch.encode(),
                    headers={"Content-Type": "application/openstack-images-v2.1-json-patch"},
                )
            reply = self.request("DELETE", path, "vmic-test-admin")
            if reply.status not in {204, 404}:
                raise RuntimeError(f"deleting image {image['id']}: HTTP {reply.status}")
        for store in ("images", "staging"):
            for leftover in (self.root / store).iterdir():
                leftover.unlink()

    # --- internals

    def _bind(self) -> list[socket.socket]:
        """The listening sockets handed to gunicorn: new ports first, the same ones after."""
        wanted = self._ports or [0] * (1 + self._identity_ports)
        listeners = [_listen(port) for port in wanted]
        self._ports = [sock.getsockname()[1] for sock in listeners]
        return listeners

    def _env(self) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("OS_", "PYTHON")) and key not in {"VIRTUAL_ENV"}
        }
        env["OS_GLANCE_CONFIG_DIR"] = str(self.etc)
        return env

    def _run(self, *command: str | Path) -> None:
        done = subprocess.run(
            [str(part) for part in command],
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
            check=False,
            cwd=self.root,
            env=self._env(),
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{command[0]} exited {done.returncode}:\n{done.stdout}{done.stderr}"
            )

    def _wait_until_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self._process is not None and self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                raise RuntimeError(f"Glance exited {code} while starting:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                connection = http.client.HTTPConnection("127.0.0.1", self._ports[0], timeout=2)
                try:
                    connection.request("GET", "/healthcheck")
                    if connection.getresponse().status == 200:
                        return
                finally:
                    connection.close()
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"Glance did not answer {self.url}/healthcheck within {START_TIMEOUT:.0f} s:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.1)

    def _configure(self) -> None:
        """glance-api.conf and its paste pipeline; Glance's policy defaults (no policy file)."""
        stores = {name: self.root / name for name in ("images", "staging", "tasks")}
        for folder in stores.values():
            folder.mkdir(parents=True, exist_ok=True)
        self.etc.mkdir(parents=True)
        (self.etc / _IDENTITIES).write_text("{}")
        (self.etc / "glance-api.conf").write_text(
            "[DEFAULT]\n"
            "enabled_backends = local:file\n"
            "hashing_algorithm = sha512\n"  # Glance's default, said out loud: vmic checks it
            "enabled_import_methods = [glance-direct]\n"  # never web-download: 127.0.0.1 only
            "use_stderr = true\n"
            "\n[database]\n"
            f"connection = sqlite:///{self.root / 'glance.sqlite'}\n"
            "\n[paste_deploy]\n"
            "flavor = trusted\n"
            f"config_file = {self.etc / 'glance-api-paste.ini'}\n"
            "\n[glance_store]\n"
            "default_backend = local\n"
            "\n[local]\n"
            f"filesystem_store_datadir = {stores['images']}\n"
            "\n[os_glance_staging_store]\n"
            f"filesystem_store_datadir = {stores['staging']}\n"
            "\n[os_glance_tasks_store]\n"
            f"filesystem_store_datadir = {stores['tasks']}\n"
            "\n[oslo_concurrency]\n"
            f"lock_path = {self.root / 'locks'}\n"
        )
        (self.etc / "glance-api-paste.ini").write_text(
            "# Glance's keystone pipeline with the identity filter in authtoken's place\n"
            "[composite:glance-api-trusted]\n"
            "paste.composite_factory = glance.api:root_app_factory\n"
            "/: api\n"
            "/healthcheck: healthcheck\n"
            "\n[composite:api]\n"
            "paste.composite_factory = glance.api:pipeline_factory\n"
            "trusted = identity versionnegotiation context rootapp\n"
            "\n[composite:rootapp]\n"
            "paste.composite_factory = glance.api:root_app_factory\n"
            "/: apiversions\n"
            "/v2: apiv2app\n"
            "\n[app:apiversions]\n"
            "paste.app_factory = glance.api.versions:create_resource\n"
            "\n[app:apiv2app]\n"
            "paste.app_factory = glance.api.v2.router:API.factory\n"
            "\n[app:healthcheck]\n"
            "paste.app_factory = oslo_middleware:Healthcheck.app_factory\n"
            "\n[filter:identity]\n"
            f"paste.filter_factory = {__name__}:identity_filter_factory\n"
            f"identities = {self.etc / _IDENTITIES}\n"
            "\n[filter:versionnegotiation]\n"
            "paste.filter_factory = "
            "glance.api.middleware.version_negotiation:VersionNegotiationFilter.factory\n"
            "\n[filter:context]\n"
            "paste.filter_factory = glance.api.middleware.context:ContextMiddleware.factory\n"
        )


def _listen(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1 for gunicorn to inherit; a port Glance just let go of
    may take the kernel a moment to release."""
    deadline = time.monotonic() + STOP_TIMEOUT
    while True:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            sock.close()
            if port == 0 or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
            continue
        sock.listen(64)
        sock.set_inheritable(True)
        return sock


def identity_filter_factory(
    global_conf: dict[str, str], **local_conf: str
) -> Callable[[WSGIApplication], WSGIApplication]:
    """The paste filter (run inside Glance) that gives each identity port its identity."""
    identities = Path(local_conf["identities"])

    def identity_filter(app: WSGIApplication) -> WSGIApplication:
        def with_identity(environ: WSGIEnvironment, start_response: StartResponse) -> Any:
            mapped: dict[str, dict[str, str]] = json.loads(identities.read_text())
            headers = mapped.get(str(environ.get("SERVER_PORT")))
            if headers is not None:
                for key in [k for k in environ if k.startswith(_IDENTITY_KEYS)]:
                    del environ[key]
                for name, value in headers.items():
                    environ["HTTP_" + name.upper().replace("-", "_")] = value
            return app(environ, start_response)

        return with_identity

    return identity_filter


def glance_image(
    server: GlanceServer, project: str, image_id: str, roles: str = DEFAULT_ROLES
) -> dict[str, Any] | None:
    """The image record as ``project`` with ``roles`` sees it (plain HTTP); None if it cannot."""
    reply = server.request("GET", f"/v2/images/{image_id}", project, roles=roles)
    if reply.status == 404:
        return None
    if reply.status != 200:
        raise RuntimeError(f"reading image {image_id}: HTTP {reply.status} {reply.body[:300]!r}")
    record: dict[str, Any] = reply.json()
    return record


def qcow2_image(data: bytes = b"", virtual_size: int = 1 << 20) -> bytes:
    """A small valid qcow2 (version 3, 64 KiB clusters) whose disk starts with ``data``.

    Glance checks an upload against its declared ``disk_format`` (random bytes declared
    qcow2 get HTTP 415), so tests that register qcow2 images send real ones. Layout:
    header, refcount table, refcount block, L1 table, one L2 table, then the data clusters.
    """
    cluster = 1 << 16
    count = -(-len(data) // cluster)
    if len(data) > virtual_size or count > cluster // 8:
        raise ValueError("data must fit the disk and one L2 table")
    clusters = 5 + count
    # magic, version, backing file offset and size, cluster bits, disk size, no encryption,
    # L1 entries (one L2 table maps 512 MiB) and offset, refcount table offset and clusters,
    # no snapshots, no feature bits, 16-bit refcounts, header length
    header = struct.pack(
        ">4sIQIIQIIQQIIQQQQII", b"QFI\xfb", 3, 0, 0, 16, virtual_size, 0, 1, 3 * cluster,
        cluster, 1, 0, 0, 0, 0, 0, 4, 104
    )  # fmt: skip
    image = bytearray(clusters * cluster)
    image[: len(header) + 8] = header + bytes(8)  # then the end of header extensions
    copied = 1 << 63  # refcount is exactly one
    struct.pack_into(">Q", image, 1 * cluster, 2 * cluster)
    struct.pack_into(f">{clusters}H", image, 2 * cluster, *([1] * clusters))
    struct.pack_into(">Q", image, 3 * cluster, 4 * cluster | copied)
    for n in range(count):
        struct.pack_into(">Q", image, 4 * cluster + 8 * n, (5 + n) * cluster | copied)
        chunk = data[n * cluster : (n + 1) * cluster]
        image[(5 + n) * cluster : (5 + n) * cluster + len(chunk)] = chunk
    return bytes(image)
