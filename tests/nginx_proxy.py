"""Run Debian's nginx on ops/nginx/ as shipped, with only the listen and upstream addresses substituted, for
the tests of the one-hostname set-up; and read the one list of the routes eco-outbox owns from its file."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import tempfile
from pathlib import Path

from service.config import PROJECT_DIR
from tests.helpers import wait_for
from tests.service_process import free_port

# Installed by the Makefile's test prerequisites (Debian package nginx), like chromium.
NGINX = Path("/usr/sbin/nginx")
NGINX_DIR = PROJECT_DIR / "ops" / "nginx"
SITE = NGINX_DIR / "eco-app.conf"
ROUTES = NGINX_DIR / "eco-outbox-routes.conf"
# Where the site file looks for the routes file, relative to nginx's configuration folder (/etc/nginx/eco/).
INSTALL_DIR = "eco"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0

COMMENT = re.compile(r"#[^\n]*")
LOCATION = re.compile(r"location\s*=\s*(\S+)\s*\{([^{}]*)\}")

# Stands in for Debian's /etc/nginx/nginx.conf, with every path of its own under one folder. gzip is on there;
# the stream's type is added to it, as an operator might, so that the stream's location has to turn it off.
MAIN_CONF = """\
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{
    worker_connections 256;
}}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/temp/body;
    proxy_temp_path {prefix}/temp/proxy;
    fastcgi_temp_path {prefix}/temp/fastcgi;
    uwsgi_temp_path {prefix}/temp/uwsgi;
    scgi_temp_path {prefix}/temp/scgi;
    gzip on;
    gzip_types text/event-stream application/json;
    include {install_dir}/{site};
}}
"""


def uncommented(path: Path) -> str:
    return COMMENT.sub("", path.read_text())


def owned_routes() -> dict[str, str]:
    """The routes file's exact paths and the body of each one's block. Anything in the file that is not such
    a block fails here, so that a route nginx sends to eco-outbox cannot hide from the tests."""
    text = uncommented(ROUTES)
    blocks = LOCATION.findall(text)
    rest = LOCATION.sub("", text).strip()
    assert not rest, f"{ROUTES.name} holds only `location = /path {{...}}` blocks; found {rest!r}"
    paths = [path for path, _ in blocks]
    assert len(paths) == len(set(paths)), f"a route is listed twice in {ROUTES.name}: {paths}"
    return {path: body for path, body in blocks}


def _substitute(text: str, pattern: str, replacement: str) -> str:
    substituted, count = re.subn(pattern, replacement, text)
    assert count == 1, f"{SITE.name} should have exactly one match of {pattern!r}"
    return substituted


def site_conf(port: int, eco_outbox: str, backend: str) -> str:
    """The site file as shipped, listening on 127.0.0.1:`port`, with the two upstreams' addresses."""
    text = SITE.read_text()
    text = _substitute(text, r"\blisten\s+80;", f"listen 127.0.0.1:{port};")
    for upstream, address in (("eco_outbox", eco_outbox), ("eco_backend", backend)):
        text = _substitute(text, rf"(upstream {upstream} \{{[^}}]*?\bserver )[^;\s]+;", rf"\g<1>{address};")
    return text


class Nginx:
    """nginx in the foreground (`daemon off`) on a free loopback port, its files in a folder of its own.

    The folder is not pytest's tmp_path: run as root, nginx's workers drop to `nobody`, and they must reach
    the temp folders it creates for them (pytest's base folder is mode 0700)."""

    def __init__(self, eco_outbox: str, backend: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._eco_outbox = eco_outbox
        self._backend = backend
        self._prefix = Path(tempfile.mkdtemp(prefix="eco-nginx-"))
        self.process: asyncio.subprocess.Process | None = None

    def _write(self) -> Path:
        self._prefix.chmod(0o755)
        install = self._prefix / INSTALL_DIR
        install.mkdir()
        shutil.copy(ROUTES, install / ROUTES.name)
        (install / SITE.name).write_text(site_conf(self.port, self._eco_outbox, self._backend))
        (self._prefix / "temp").mkdir()
        conf = self._prefix / "nginx.conf"
        conf.write_text(MAIN_CONF.format(prefix=self._prefix, install_dir=INSTALL_DIR, site=SITE.name))
        return conf

    async def start(self) -> None:
        assert os.access(NGINX, os.X_OK), "run the tests with `make test`: it installs Debian's nginx"
        conf = self._write()
        with (self._prefix / "stderr.log").open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                str(NGINX),
                *("-p", f"{self._prefix}/", "-c", str(conf), "-e", str(self._prefix / "error.log")),
                stdout=log,
                stderr=log,
            )
        await wait_for(self._listening, timeout_s=START_TIMEOUT_S, interval_s=0.02)

    async def _listening(self) -> bool:
        assert self.process is not None
        if self.process.returncode is not None:
            raise AssertionError(f"nginx exited with {self.process.returncode}: {self.log()}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return False
        writer.close()
        await writer.wait_closed()
        return True

    async def stop(self) -> None:
        """SIGTERM, nginx's fast shutdown: the master stops its workers before it exits."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        shutil.rmtree(self._prefix, ignore_errors=True)

    def log(self) -> str:
        return "".join(
            path.read_text(errors="replace")
            for path in (self._prefix / "stderr.log", self._prefix / "error.log")
            if path.exists()
        )
