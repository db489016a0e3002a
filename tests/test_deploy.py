"""The operator's kit in deploy/ holds together, as far as a machine without Docker can tell.

The compose file, Dockerfile, Caddyfile, nginx example and systemd unit are parsed and checked
against each other and against the node's own settings and limits; the entrypoint and the
health check run for real (against this venv's `aidnode` and a stub server). Where a tool is
installed (systemd-analyze, caddy, nginx), it also checks its own file; those tests say so when
they skip.
"""

import http.server
import inspect
import json
import math
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

import server.app
import server.cli
from federation.identity import parse_base_url
from server.app import BODY_LIMIT_API, BODY_LIMIT_FEDERATION, BODY_LIMIT_FORM
from server.config import SETTINGS, SETTINGS_BY_NAME

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
AIDNODE = Path(sys.executable).with_name("aidnode")
NODES = ("eastside", "pantry", "access")
NODE_PORT = SETTINGS_BY_NAME["port"].default
SETTING_VARIABLES = {"AIDNODE_" + setting.name.upper() for setting in SETTINGS}
UNIT_DATA_DIR = "/var/lib/aidnode"
UNIT_AIDNODE = "/opt/aidnode/venv/bin/aidnode"


# --- small readers for each file ---------------------------------------------------------


def load_compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def node_services(compose: dict) -> dict[str, dict]:
    return {name: svc for name, svc in compose["services"].items() if "build" in svc}


def published_ports(service: dict) -> list[tuple[str, str, str]]:
    """(host address, host port, container port[/proto]) for each entry of `ports`."""
    ports = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            target = f"{entry['target']}/{entry.get('protocol', 'tcp')}"
            ports.append((entry.get("host_ip", "0.0.0.0"), str(entry.get("published", "")), target))
            continue
        spec, _, protocol = str(entry).partition("/")
        parts = spec.rsplit(":", 2)
        host_ip, published = ("0.0.0.0", "") if len(parts) == 1 else (
            ("0.0.0.0", parts[0]) if len(parts) == 2 else (parts[0], parts[1]))  # fmt: skip
        ports.append((host_ip, published, f"{parts[-1]}/{protocol or 'tcp'}"))
    return ports


def named_volume(mount: str | dict) -> tuple[str | None, str]:
    """(volume name, or None for a bind mount; path in the container) of a volume entry."""
    if isinstance(mount, dict):
        return (mount["source"] if mount.get("type") == "volume" else None), mount["target"]
    source, target = mount.split(":")[:2]
    return (None if source.startswith((".", "/", "~")) else source), target


def seconds(duration: str) -> int:
    """A compose or systemd duration such as 30s, 1m30s or 45 in seconds."""
    if duration.strip().isdigit():
        return int(duration)
    units = {"h": 3600, "min": 60, "m": 60, "s": 1}
    parts = re.findall(r"(\d+)\s*(h|min|m|s)", duration)
    assert parts, duration
    return sum(int(n) * units[unit] for n, unit in parts)


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    instructions, pending = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not pending and not stripped):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        pending += stripped
        word, _, args = pending.partition(" ")
        instructions.append((word.upper(), args.strip()))
        pending = ""
    return instructions


def dockerfile() -> list[tuple[str, str]]:
    return dockerfile_instructions((DEPLOY / "Dockerfile").read_text())


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


def exec_form(args: str) -> list[str]:
    """The JSON array of an exec-form CMD/ENTRYPOINT/HEALTHCHECK (after its options)."""
    return json.loads(args[args.index("["):])


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Whether Docker leaves `path` out of the build context (last matching pattern wins;
    a pattern matching a parent folder matches everything in it; `**` spans folders)."""

    def regex(pattern: str) -> re.Pattern:
        out, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out, i = out + "(.*/)?", i + 3
            elif pattern.startswith("**", i):
                out, i = out + ".*", i + 2
            elif pattern[i] == "*":
                out, i = out + "[^/]*", i + 1
            elif pattern[i] == "?":
                out, i = out + "[^/]", i + 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                out, i = out + pattern[i:end + 1], end + 1
            else:
                out, i = out + re.escape(pattern[i]), i + 1
        return re.compile(out + r"\Z")

    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        cleaned = os.path.normpath(pattern.lstrip("!").strip("/"))
        if any(regex(cleaned).match(candidate) for candidate in candidates):
            excluded = not negated
    return excluded


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def caddy_sites(text: str) -> dict[str, list[list[str]]]:
    """Site address → the directives (split into words) directly inside its block."""
    sites: dict[str, list[list[str]]] = {}
    current: list[str] = []
    depth = 0
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line == "}":
            depth -= 1
            current = [] if depth == 0 else current
            continue
        if depth == 0 and line.endswith("{"):
            address = line[:-1].strip()
            current = [a for a in re.split(r"[,\s]+", address) if a] if address and not address.startswith("(") else []
            for host in current:
                sites[host] = []
            depth = 1
            continue
        if depth == 1:
            for host in current:
                sites[host].append(line.split())
        if line.endswith("{"):
            depth += 1
    return sites


def nginx_directives(text: str) -> list[tuple[str, str]]:
    lines = [line.split("#", 1)[0] for line in text.splitlines()]
    return re.findall(r"(\w+)\s+([^;{}]*);", "\n".join(lines))


def nginx_size(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([kKmMgG]?)", value.strip()).groups()
    return int(number) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit.lower()]


def systemd_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file as section → key → every value given (systemd allows repeating a key)."""
    sections: dict[str, dict[str, list[str]]] = {}
    section = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = sections.setdefault(line[1:-1], {})
            continue
        assert section is not None, f"{line!r} is outside any section"
        key, sep, value = line.partition("=")
        assert sep, f"{line!r} is not key=value"
        section.setdefault(key.strip(), []).append(value.strip())
    return sections


def graceful_shutdown_seconds() -> int:
    """How long `aidnode serve` may take after SIGTERM: in-flight requests finish (uvicorn's
    timeout_graceful_shutdown), then the workers finish their rounds (WORKER_GRACE)."""
    found = re.search(r"timeout_graceful_shutdown=(\w+)", inspect.getsource(server.cli.cmd_serve))
    assert found, "cmd_serve no longer sets uvicorn's timeout_graceful_shutdown"
    value = found.group(1)
    requests = int(value) if value.isdigit() else int(getattr(server.cli, value))
    return requests + math.ceil(server.app.WORKER_GRACE)


def compose_hostnames() -> dict[str, str]:
    """Node service → the host of its AIDNODE_BASE_URL."""
    return {name: urlsplit(svc["environment"]["AIDNODE_BASE_URL"]).hostname
            for name, svc in node_services(load_compose()).items()}  # fmt: skip


# --- compose.yaml --------------------------------------------------------------------------


def test_compose_runs_three_nodes_and_caddy():
    """compose.yaml has the three node services, built from deploy/Dockerfile, and caddy."""
    compose = load_compose()
    assert set(compose["services"]) == {*NODES, "caddy"}
    assert set(node_services(compose)) == set(NODES)
    for name, svc in node_services(compose).items():
        context = (DEPLOY / svc["build"]["context"]).resolve()
        assert context == ROOT, name
        assert (context / svc["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile", name
        assert svc.get("restart") in ("always", "unless-stopped", "on-failure"), name


def test_compose_nodes_have_a_healthcheck_on_healthz():
    """Every node's healthcheck is the Dockerfile's own HEALTHCHECK command (GET /healthz)."""
    healthcheck = exec_form(next(a for w, a in dockerfile() if w == "HEALTHCHECK"))
    for name, svc in node_services(load_compose()).items():
        check = svc["healthcheck"]
        assert not check.get("disable", False), name
        assert check["test"][0] == "CMD" and check["test"][1:] == healthcheck, name
        assert seconds(check["interval"]) <= 60 and seconds(check["timeout"]) < seconds(check["interval"])


def test_compose_nodes_keep_data_in_their_own_named_volume():
    """Each node mounts a named volume of its own at /data."""
    compose = load_compose()
    seen = set()
    for name, svc in node_services(compose).items():
        data = [named_volume(m)[0] for m in svc["volumes"] if named_volume(m)[1] == "/data"]
        assert len(data) == 1 and data[0] is not None, f"{name} has no named volume at /data"
        assert data[0] not in seen, f"{name} shares its data volume"
        seen.add(data[0])


def test_compose_nodes_have_distinct_https_base_urls_and_real_settings():
    """AIDNODE_BASE_URL is a valid https base_url, one per node; every AIDNODE_ variable is a
    setting the node knows; nodes listen on 0.0.0.0 inside their containers."""
    urls = set()
    for name, svc in node_services(load_compose()).items():
        env = svc["environment"]
        assert set(env) <= SETTING_VARIABLES, f"{name}: unknown {set(env) - SETTING_VARIABLES}"
        url = env["AIDNODE_BASE_URL"]
        assert url.startswith("https://"), name
        assert parse_base_url(url, allow_private_addresses=False) == url
        assert url not in urls, f"{name} repeats {url}"
        urls.add(url)
        assert env["AIDNODE_NAME"].strip(), name
        assert env["AIDNODE_HOST"] == "0.0.0.0", name
        assert int(env.get("AIDNODE_PORT", NODE_PORT)) == NODE_PORT, name
    assert len(urls) == len(NODES)


def test_compose_nodes_publish_no_ports_and_stop_gracefully():
    """Nodes are reached only through Caddy, and get time to finish requests on stop."""
    for name, svc in node_services(load_compose()).items():
        assert "ports" not in svc, f"{name} publishes ports on the host"
        assert svc.get("network_mode") != "host", name
        assert seconds(svc["stop_grace_period"]) > graceful_shutdown_seconds(), name


def test_only_caddy_publishes_beyond_loopback_and_only_80_and_443():
    """Caddy publishes exactly 80 and 443 (tcp, and udp for HTTP/3); anything else bound on
    the host is bound to 127.0.0.1."""
    compose = load_compose()
    caddy = compose["services"]["caddy"]
    assert caddy["image"].split(":")[0] in ("caddy", "docker.io/library/caddy")
    ports = published_ports(caddy)
    assert {published for _, published, _ in ports} == {"80", "443"}
    for _, published, target in ports:
        assert target.split("/")[0] == published and target.split("/")[1] in ("tcp", "udp")
    assert ("0.0.0.0", "443", "443/tcp") in ports and ("0.0.0.0", "80", "80/tcp") in ports
    for name, svc in compose["services"].items():
        if name != "caddy":
            for host_ip, published, _ in published_ports(svc):
                assert host_ip == "127.0.0.1", f"{name} publishes {published} on {host_ip}"


def test_caddy_waits_for_healthy_nodes_and_keeps_its_state():
    """Caddy starts once every node is healthy; its certificates and config live in volumes."""
    caddy = load_compose()["services"]["caddy"]
    assert {name: dep["condition"] for name, dep in caddy["depends_on"].items()} == {
        name: "service_healthy" for name in NODES}  # fmt: skip
    mounts = dict((target, source) for source, target in map(named_volume, caddy["volumes"]))
    assert mounts.get("/data") and mounts.get("/config")
    caddyfile = [m for m in caddy["volumes"] if isinstance(m, str) and m.split(":")[1] == "/etc/caddy/Caddyfile"]
    assert caddyfile and (DEPLOY / caddyfile[0].split(":")[0]).resolve() == DEPLOY / "Caddyfile"


def test_every_named_volume_is_declared_and_used():
    compose = load_compose()
    used = {named_volume(m)[0] for svc in compose["services"].values() for m in svc.get("volumes", [])}
    used.discard(None)
    declared = set(compose.get("volumes") or {})
    assert used == declared, f"undeclared: {used - declared}, unused: {declared - used}"


# --- Dockerfile and .dockerignore ---------------------------------------------------------


def test_dockerfile_builds_on_python_311_slim_in_stages():
    instructions = dockerfile()
    args = dict(a.split("=", 1) for w, a in instructions if w == "ARG" and "=" in a)
    bases = [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], a.split()[0])
             for w, a in instructions if w == "FROM"]  # fmt: skip
    assert bases and all(base == "python:3.11-slim" for base in bases), bases
    stage_names = {a.split()[-1] for w, a in instructions if w == "FROM" and " AS " in a.upper()}
    for word, a in final_stage(instructions):
        if word == "COPY" and "--from=" in a:
            assert re.search(r"--from=(\S+)", a).group(1) in stage_names


def test_dockerfile_installs_the_package_plainly():
    """pip installs the project itself: not editable, no test or dev extras."""
    runs = " ".join(a for w, a in dockerfile() if w == "RUN")
    installs = re.findall(r"pip install ([^&;]*)", runs)
    assert installs, "no pip install in the Dockerfile"
    for args in installs:
        words = args.split()
        assert "-e" not in words and "--editable" not in words, args
        assert not re.search(r"\[(test|dev)", args), args
        assert "." in words, f"pip install {args} does not install the project"


def test_dockerfile_runs_as_a_non_root_user_with_data_in_a_volume():
    stage = final_stage(dockerfile())
    words = [w for w, _ in stage]
    entrypoint = words.index("ENTRYPOINT")
    users = [a for w, a in stage[:entrypoint] if w == "USER"]
    assert users, "no USER before ENTRYPOINT"
    assert users[-1].split(":")[0] not in ("root", "0"), users[-1]
    assert "USER" not in words[entrypoint:], "USER changes after ENTRYPOINT"
    volumes = [a for w, a in stage if w == "VOLUME"]
    assert any("/data" in (json.loads(v) if v.startswith("[") else v.split()) for v in volumes)


def test_dockerfile_exposes_the_port_the_node_listens_on():
    stage = final_stage(dockerfile())
    env = " ".join(a for w, a in stage if w == "ENV")
    assert re.search(rf"\bAIDNODE_PORT={NODE_PORT}\b", env)
    assert re.search(r"\bAIDNODE_HOST=0\.0\.0\.0\b", env)
    assert [a for w, a in stage if w == "EXPOSE"] == [str(NODE_PORT)]


def test_dockerfile_entrypoint_is_the_deploy_script():
    """ENTRYPOINT runs deploy/docker-entrypoint.sh as copied in: by its path, or by its name
    from a folder on the image's PATH."""
    stage = final_stage(dockerfile())
    entrypoint = exec_form(next(a for w, a in stage if w == "ENTRYPOINT"))
    copies = [a.split() for w, a in stage if w == "COPY" and "deploy/docker-entrypoint.sh" in a]
    assert copies, "the entrypoint script is not copied in"
    installed = Path(copies[0][-1])
    if entrypoint[0] != str(installed):
        assert entrypoint[0] == installed.name
        assert str(installed.parent) in ("/usr/local/bin", "/usr/bin", "/bin")
    assert len(entrypoint) == 1, "the entrypoint takes the container's command as its arguments"


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # the name http.server calls
        code = type(self).status if self.path == "/healthz" else 404
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"status": "ok"}' if code == 200 else b'{"status": "unavailable"}')

    def log_message(self, *args):
        pass


def test_dockerfile_healthcheck_passes_on_200_and_fails_otherwise(tmp_path):
    """The HEALTHCHECK uses only the image's python: exit 0 on 200 from /healthz, non-zero on
    503 or no server; a proxy in the environment is not used for it."""
    healthcheck = exec_form(next(a for w, a in dockerfile() if w == "HEALTHCHECK"))
    assert healthcheck[0] == "python" and "/healthz" in " ".join(healthcheck)
    assert not any(tool in " ".join(healthcheck) for tool in ("curl", "wget"))
    command = [sys.executable, *healthcheck[1:]]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    env = {"PATH": os.environ["PATH"], "AIDNODE_PORT": str(server.server_address[1]),
           "http_proxy": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}  # fmt: skip

    def check() -> int:
        return subprocess.run(command, env=env, capture_output=True, timeout=30).returncode

    try:
        # the node answers 200
        _Health.status = 200
        assert check() == 0
        # the database does not answer: 503
        _Health.status = 503
        assert check() != 0
    finally:
        _Health.status = 200
        server.shutdown()
        server.server_close()
    # nothing listens any more
    assert check() != 0


def test_dockerignore_lets_in_the_package_and_keeps_the_rest_out():
    patterns = dockerignore_patterns()
    # everything the Dockerfile copies from the context, and every file of the packages
    sources = [s for a in (a.split() for w, a in dockerfile() if w == "COPY" and "--from=" not in a)
               for s in a[:-1] if not s.startswith("--")]  # fmt: skip
    assert "pyproject.toml" in sources and "server/" in sources
    for source in sources:
        assert not dockerignore_excludes(patterns, source.rstrip("/")), source
    for package in ("federation", "server", "templates"):
        for path in (ROOT / package).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                relative = path.relative_to(ROOT).as_posix()
                assert not dockerignore_excludes(patterns, relative), relative
    # what never belongs in an image
    for path in (".venv/bin/python", ".git/HEAD", "aidnode-data/keys/main.pem",
                 "aidnode-data/aidnode.db", ".pytest_cache/v/cache/lastfailed", "test-output/a.log",
                 ".hypothesis/examples/x", "tests/test_deploy.py", "aidnode.egg-info/PKG-INFO",
                 "server/__pycache__/app.cpython-311.pyc", "bench/feed.py"):  # fmt: skip
        assert dockerignore_excludes(patterns, path), path


# --- Caddyfile and nginx ---------------------------------------------------------------------


def test_caddyfile_proxies_each_compose_hostname_to_its_node():
    sites = caddy_sites((DEPLOY / "Caddyfile").read_text())
    hostnames = compose_hostnames()
    assert set(sites) == set(hostnames.values())
    for service, host in hostnames.items():
        proxies = [d[1:] for d in sites[host] if d[0] == "reverse_proxy"]
        assert proxies == [[f"{service}:{NODE_PORT}"]], host
        assert not any(d[0] == "encode" for d in sites[host]), f"{host} re-encodes responses"


@pytest.mark.skipif(shutil.which("caddy") is None, reason="the caddy binary is not installed here")
def test_caddyfile_adapts_with_caddy():
    """caddy itself reads the Caddyfile (no warnings) into routes for the same hostnames."""
    result = subprocess.run(["caddy", "adapt", "--config", str(DEPLOY / "Caddyfile"),
                             "--adapter", "caddyfile"], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert '"level":"warn"' not in result.stderr, result.stderr
    config = json.loads(result.stdout)
    routes = [r for s in config["apps"]["http"]["servers"].values() for r in s["routes"]]
    hosts = {h for r in routes for m in r["match"] for h in m["host"]}
    assert hosts == set(compose_hostnames().values())


def test_nginx_example_terminates_tls_and_caps_bodies_like_the_node():
    directives = nginx_directives((DEPLOY / "nginx.conf.example").read_text())
    values = {}
    for name, value in directives:
        values.setdefault(name, []).append(value.strip())
    # the body cap is the node's largest (federation), so nginx refuses only what the node would
    assert [nginx_size(v) for v in values["client_max_body_size"]] == [
        max(BODY_LIMIT_FEDERATION, BODY_LIMIT_API, BODY_LIMIT_FORM)]  # fmt: skip
    assert any(v.startswith("443 ssl") for v in values["listen"])
    assert values["ssl_certificate"] and values["ssl_certificate_key"]
    # the path goes upstream untouched (no URI part on proxy_pass) to the node's address
    assert values["proxy_pass"] == ["http://aidnode"]
    assert values["server"] == [f"{SETTINGS_BY_NAME['host'].default}:{NODE_PORT}"]
    for timeout in ("proxy_connect_timeout", "proxy_read_timeout", "proxy_send_timeout"):
        assert 0 < seconds(values[timeout][0]) <= 300, timeout


@pytest.mark.skipif(shutil.which("nginx") is None, reason="the nginx binary is not installed here")
def test_nginx_example_passes_nginx_t(tmp_path):
    """nginx -t accepts the example inside an http block, with a throwaway certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aid.eastside.example")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now).not_valid_after(now + timedelta(days=1))
            .sign(key, hashes.SHA256()))  # fmt: skip
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    site = (DEPLOY / "nginx.conf.example").read_text()
    site = re.sub(r"ssl_certificate\s+\S+;", f"ssl_certificate {tmp_path}/cert.pem;", site)
    site = re.sub(r"ssl_certificate_key\s+\S+;", f"ssl_certificate_key {tmp_path}/key.pem;", site)
    (tmp_path / "site.conf").write_text(site)
    temp = "\n".join(f"  {kind}_temp_path {tmp_path}/tmp;"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))  # fmt: skip
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
        f"http {{\n  access_log off;\n{temp}\n  include {tmp_path}/site.conf;\n}}\n")
    result = subprocess.run(["nginx", "-e", "stderr", "-t", "-p", str(tmp_path), "-c",
                             str(tmp_path / "nginx.conf")], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "[warn]" not in result.stderr and "[emerg]" not in result.stderr, result.stderr


# --- systemd unit ----------------------------------------------------------------------------

HARDENING = {
    "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes",
    "NoNewPrivileges": "yes", "CapabilityBoundingSet": "", "MemoryDenyWriteExecute": "yes",
    "LockPersonality": "yes", "RestrictNamespaces": "yes", "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes",
    "UMask": "0077", "Restart": "on-failure",
}  # fmt: skip
_YES = {"yes", "true", "on", "1"}


def test_systemd_unit_is_hardened():
    """The unit has every hardening directive the operator's kit promises, with its value."""
    unit = systemd_unit(DEPLOY / "aidnode.service")
    service = unit["Service"]
    for key, expected in HARDENING.items():
        assert key in service, f"{key}= is missing"
        value = service[key][-1]
        if expected == "yes":
            assert value.lower() in _YES, f"{key}={value}"
        else:
            assert value == expected, f"{key}={value}, expected {expected!r}"
    families = {f for value in service["RestrictAddressFamilies"] for f in value.split()}
    assert families == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert "@system-service" in service["SystemCallFilter"][0].split()
    # runs as a user of its own, never root
    dynamic = service.get("DynamicUser", ["no"])[-1].lower() in _YES
    assert dynamic or service.get("User", ["root"])[-1] not in ("root", "0")


def test_systemd_unit_serves_its_state_directory_from_the_venv():
    service = systemd_unit(DEPLOY / "aidnode.service")["Service"]
    assert service["ExecStart"] == [f"{UNIT_AIDNODE} serve --data {UNIT_DATA_DIR}"]
    assert UNIT_DATA_DIR == "/var/lib/" + service["StateDirectory"][-1]
    assert service.get("StateDirectoryMode", ["0700"])[-1] == "0700"


def test_systemd_unit_waits_long_enough_for_a_graceful_stop():
    """TimeoutStopSec leaves time for `serve` to finish in-flight work after SIGTERM."""
    service = systemd_unit(DEPLOY / "aidnode.service")["Service"]
    assert service.get("KillSignal", ["SIGTERM"])[-1] == "SIGTERM"
    assert seconds(service["TimeoutStopSec"][-1]) >= graceful_shutdown_seconds() + 10
    unit = systemd_unit(DEPLOY / "aidnode.service")
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    assert "network-online.target" in unit["Unit"]["After"][0].split()


def _unit_for_this_machine(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this venv's aidnode: systemd-analyze verify fails
    on an ExecStart that does not exist, and /opt/aidnode is not installed here."""
    text = (DEPLOY / "aidnode.service").read_text()
    assert UNIT_AIDNODE in text
    path = tmp_path / "aidnode.service"
    path.write_text(text.replace(UNIT_AIDNODE, str(AIDNODE)))
    return path


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed here, so the unit is not verified "
                           "by systemd (test_systemd_unit_is_hardened still checks it)")  # fmt: skip
def test_systemd_unit_verifies(tmp_path):
    """systemd-analyze verify accepts the unit with no complaint about any line of it."""
    unit = _unit_for_this_machine(tmp_path)
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if "aidnode" in line]
    assert result.returncode == 0 and not complaints, "\n".join(complaints) or result.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed here, so the unit's exposure is not rated")  # fmt: skip
def test_systemd_unit_exposure_is_low(tmp_path):
    """systemd's own review of the sandbox rates it well (OK: under 2.0 of 10)."""
    help_text = subprocess.run(["systemd-analyze", "--help"], capture_output=True, text=True).stdout
    if "--offline" not in help_text:
        pytest.skip("this systemd-analyze cannot review a unit file offline (systemd < 250)")
    unit = _unit_for_this_machine(tmp_path)
    result = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit)],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    found = re.search(r"Overall exposure level for aidnode\.service: (\d+\.\d+)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) < 2.0, result.stdout


# --- the container's entrypoint --------------------------------------------------------------

ENTRYPOINT = DEPLOY / "docker-entrypoint.sh"


def entrypoint_env(data: Path, **extra: str) -> dict[str, str]:
    """A clean environment (no AIDNODE_* from outside) with this venv's aidnode on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIDNODE_")}
    env["PATH"] = f"{AIDNODE.parent}{os.pathsep}{env.get('PATH', '')}"
    env["AIDNODE_DATA"] = str(data)
    env.update(extra)
    return env


def run_entrypoint(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(ENTRYPOINT), *args], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def test_entrypoint_is_valid_sh_and_executable():
    result = subprocess.run(["sh", "-n", str(ENTRYPOINT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert ENTRYPOINT.stat().st_mode & stat.S_IXUSR, "deploy/docker-entrypoint.sh is not executable"
    assert ENTRYPOINT.read_text().startswith("#!/bin/sh\n")


@pytest.mark.parametrize("service", NODES)
def test_entrypoint_creates_each_compose_node_once(tmp_path, service):
    """With a compose node's own environment, the first start creates the node; later starts
    leave it exactly as it is."""
    environment = {k: str(v) for k, v in load_compose()["services"][service]["environment"].items()}
    data = tmp_path / "data"
    data.mkdir()  # as a fresh volume: there, but empty
    env = entrypoint_env(data, AIDNODE_INIT_ONLY="1", **environment)
    # first start: init
    first = run_entrypoint(env)
    assert first.returncode == 0, first.stderr
    assert "created node" in first.stdout
    settings = tomllib.loads((data / "aidnode.toml").read_text())
    assert settings["base_url"] == environment["AIDNODE_BASE_URL"]
    assert settings["name"] == environment["AIDNODE_NAME"]
    key = (data / "keys" / "main.pem").read_bytes()
    database = data / "aidnode.db"
    assert database.exists()
    assert stat.S_IMODE(database.stat().st_mode) == 0o600  # umask 077
    files = sorted(p.relative_to(data).as_posix() for p in data.rglob("*"))
    # second and third starts: nothing changes
    for _ in range(2):
        again = run_entrypoint(env)
        assert again.returncode == 0, again.stderr
        assert "created node" not in again.stdout
        assert (data / "keys" / "main.pem").read_bytes() == key
        assert tomllib.loads((data / "aidnode.toml").read_text()) == settings
        assert sorted(p.relative_to(data).as_posix() for p in data.rglob("*")) == files


def test_entrypoint_serves_the_node_once_it_exists(tmp_path):
    """Without arguments the entrypoint ends in `exec aidnode serve --data DIR`; with
    arguments it runs them instead (a real `aidnode check` here)."""
    data = tmp_path / "data"
    env = entrypoint_env(data, AIDNODE_NAME="Eastside Tenants' Union",
                         AIDNODE_BASE_URL="https://aid.eastside.example")  # fmt: skip
    assert run_entrypoint({**env, "AIDNODE_INIT_ONLY": "1"}).returncode == 0
    # a command given to the container runs against the node
    checked = run_entrypoint(env, "aidnode", "check", "--data", str(data))
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith("ok:")
    # with no command: serve (an `aidnode` that records its arguments stands in for the server)
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    fake = fake_bin / "aidnode"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{tmp_path}/args"\n')
    fake.chmod(0o755)
    served = run_entrypoint({**env, "PATH": f"{fake_bin}{os.pathsep}{env['PATH']}"})
    assert served.returncode == 0, served.stderr
    assert (tmp_path / "args").read_text().split() == ["serve", "--data", str(data)]


def test_entrypoint_without_name_or_url_creates_nothing(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    result = run_entrypoint(entrypoint_env(data, AIDNODE_NAME="Riverside Food Pantry"))
    assert result.returncode == 1
    assert "AIDNODE_BASE_URL" in result.stderr
    assert list(data.iterdir()) == []


def test_entrypoint_never_overwrites_part_of_a_node(tmp_path):
    """A data directory with keys but no settings is refused, not re-created."""
    data = tmp_path / "data"
    (data / "keys").mkdir(parents=True)
    (data / "keys" / "main.pem").write_text("the only copy of a key\n")
    result = run_entrypoint(entrypoint_env(data, AIDNODE_NAME="Access Disability Collective",
                                           AIDNODE_BASE_URL="https://aid.access.example"))  # fmt: skip
    assert result.returncode == 1
    assert "already holds a node" in result.stderr and "Traceback" not in result.stderr
    assert (data / "keys" / "main.pem").read_text() == "the only copy of a key\n"
    assert not (data / "aidnode.toml").exists()


# --- docs --------------------------------------------------------------------------------------


def test_operating_docs_cover_the_kit():
    """docs/operating.md explains each file of deploy/ and the three ways to run a node."""
    text = (ROOT / "docs" / "operating.md").read_text()
    for heading in ("## Running with Docker Compose", "## Running under systemd on a small VPS",
                    "## Upgrading"):  # fmt: skip
        assert heading in text, heading
    for name in ("compose.yaml", "Dockerfile", "Caddyfile", "nginx.conf.example", "aidnode.service"):
        assert f"deploy/{name}" in text, name
