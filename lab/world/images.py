"""Stand-in images for haproxy and osixia/keepalived, built from this machine's binaries.

No registry is reachable, so the lab builds its own images and tags them with exactly the image
references of the synthesized `docker run` lines. Each keeps the contract of the real image that
the userdata relies on (read from the images' sources, nothing copied):

- haproxy (docker-library/haproxy): runs as uid 99 "haproxy"; `docker-entrypoint.sh` turns a
  first argument `haproxy` (or an option) into `haproxy -W -db ...`; the default command reads
  /usr/local/etc/haproxy/haproxy.cfg; STOPSIGNAL SIGUSR1; workdir /var/lib/haproxy.
- osixia/keepalived 2.0.20: `/container/tool/run [--copy-service]`; the config is read from
  /container/service/keepalived/assets/keepalived.conf (from the copy under /container/run with
  `--copy-service`); each address of KEEPALIVED_VIRTUAL_IPS is removed from whatever interface
  holds it before keepalived starts; keepalived runs in the foreground, logging to the console,
  with its pid in /var/run/keepalived.pid; sh, curl, ping, a `sleep` that takes fractions, `date` and
  `mv` (busybox's in the real image, which is Alpine-based) are there.

The binaries are Debian's (haproxy 2.6, keepalived 2.2.7), with the libraries `ldd` lists. The
images are built once by a throw-away engine and saved as one tarball, cached under
/var/cache/kha-lab and keyed by a hash of everything that goes into them; each node's engine
loads it, as a node would pull from a registry.
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from lab.world.engine import Engine, remove_cgroups
from lab.world.topology import remove_ns, run

CACHE = Path("/var/cache/kha-lab")
LABEL = "kha.lab.stand-in"

_HAPROXY_ENTRYPOINT = """\
#!/bin/sh
# Stand-in for the official image's entrypoint: same argument handling.
set -e
case "$1" in -*) set -- haproxy "$@" ;; esac
if [ "$1" = haproxy ]; then
    shift
    set -- haproxy -W -db "$@"
fi
exec "$@"
"""

_KEEPALIVED_RUN = """\
#!/bin/sh
# Stand-in for osixia/keepalived 2.0.20's /container/tool/run with its keepalived service.
set -e
service=/container/service
if [ "$1" = --copy-service ]; then
    shift
    rm -rf /container/run/service
    mkdir -p /container/run
    cp -R /container/service /container/run/service
    service=/container/run/service
fi
if [ $# -gt 0 ]; then
    echo "stand-in osixia/keepalived: unsupported arguments: $*" >&2
    exit 2
fi
# KEEPALIVED_VIRTUAL_IPS: "#PYTHON2BASH:['a', 'b dev eth0']" or a plain list; first word of each.
list=${KEEPALIVED_VIRTUAL_IPS#'#PYTHON2BASH:'}
list=${list#[}
list=${list%]}
old_ifs=$IFS
IFS=,
for item in $list; do
    IFS=$old_ifs
    set -- $item
    vip=${1#\\'}
    vip=${vip%\\'}
    vip=${vip#\\"}
    vip=${vip%\\"}
    vip=${vip%/*}
    [ -n "$vip" ] || continue
    ip -o -4 addr show | while read -r _ dev _ addr _; do
        if [ "${addr%/*}" = "$vip" ]; then
            echo "stand-in osixia/keepalived: removing $addr from $dev"
            ip addr del "$addr" dev "$dev" || true
        fi
    done
    IFS=,
done
IFS=$old_ifs
mkdir -p /usr/local/etc/keepalived
if [ ! -e /usr/local/etc/keepalived/keepalived.conf ]; then
    ln -sf "$service/keepalived/assets/keepalived.conf" /usr/local/etc/keepalived/keepalived.conf
fi
rm -f /var/run/keepalived.pid
exec keepalived -f /usr/local/etc/keepalived/keepalived.conf --dont-fork --log-console \\
    $KEEPALIVED_COMMAND_LINE_ARGUMENTS
"""

_PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "haproxy:x:99:99::/var/lib/haproxy:/usr/sbin/nologin\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
)
_GROUP = "root:x:0:\nhaproxy:x:99:\nnogroup:x:65534:\n"
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Entry:
    """One file of a root filesystem: from this machine (`source`) or written (`text`)."""

    path: str
    source: str | None = None
    text: str | None = None
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    kind: str = "file"  # file, dir, symlink (target in text)


@dataclass(frozen=True)
class StandIn:
    """One stand-in image: its role (the container name the userdata gives it) and its contents."""

    role: str
    binaries: dict[str, str]  # path in the image -> command on this machine
    extra: tuple[Entry, ...]
    dockerfile: str


def _dirs(*paths: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> tuple[Entry, ...]:
    return tuple(Entry(p, mode=mode, uid=uid, gid=gid, kind="dir") for p in paths)


_COMMON = (
    *_dirs(
        "/bin",
        "/etc",
        "/lib",
        "/lib64",
        "/root",
        "/run",
        "/usr",
        "/usr/bin",
        "/usr/sbin",
        "/usr/local",
        "/usr/local/bin",
        "/usr/local/sbin",
        "/usr/local/etc",
        "/var",
        "/var/lib",
    ),
    Entry("/tmp", mode=0o1777, kind="dir"),
    Entry("/var/run", text="/run", kind="symlink"),
    Entry("/etc/passwd", text=_PASSWD),
    Entry("/etc/group", text=_GROUP),
)

HAPROXY = StandIn(
    role="haproxy",
    binaries={"/usr/local/sbin/haproxy": "haproxy", "/bin/sh": "sh", "/bin/cat": "cat", "/bin/ls": "ls"},
    extra=(
        *_COMMON,
        *_dirs("/usr/local/etc/haproxy"),
        *_dirs("/var/lib/haproxy", uid=99, gid=99),
        Entry("/usr/local/bin/docker-entrypoint.sh", text=_HAPROXY_ENTRYPOINT, mode=0o755),
    ),
    dockerfile=f"""\
FROM scratch
ADD rootfs.tar /
ENV PATH={_PATH}
STOPSIGNAL SIGUSR1
ENTRYPOINT ["docker-entrypoint.sh"]
USER haproxy
WORKDIR /var/lib/haproxy
CMD ["haproxy", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]
""",
)

KEEPALIVED = StandIn(
    role="keepalived",
    binaries={
        "/usr/local/sbin/keepalived": "keepalived",
        "/bin/sh": "sh",
        "/usr/bin/curl": "curl",
        "/bin/sleep": "sleep",
        "/sbin/ip": "ip",
        "/bin/kill": "kill",
        "/usr/bin/pkill": "pkill",
        "/bin/cat": "cat",
        "/bin/cp": "cp",
        "/bin/rm": "rm",
        "/bin/mkdir": "mkdir",
        "/bin/ln": "ln",
        "/bin/ls": "ls",
        # the notify script's (busybox has them in the real image)
        "/bin/date": "date",
        "/bin/mv": "mv",
        # for the seed comparison's check ("is something listening on the port")
        "/bin/grep": "grep",
        "/bin/ss": "ss",
        # for the network check (the real image's ping is busybox's; the script uses what both take)
        "/bin/ping": "ping",
    },
    extra=(
        *_COMMON,
        *_dirs(
            "/container",
            "/container/tool",
            "/container/run",
            "/container/service",
            "/container/service/keepalived",
            "/container/service/keepalived/assets",
            "/etc/keepalived",
            "/usr/local/etc/keepalived",
        ),
        Entry("/container/tool/run", text=_KEEPALIVED_RUN, mode=0o755),
    ),
    dockerfile=f"""\
FROM scratch
ADD rootfs.tar /
ENV PATH={_PATH}
ENV KEEPALIVED_COMMAND_LINE_ARGUMENTS="--log-detail --dump-conf"
ENTRYPOINT ["/container/tool/run"]
""",
)

STAND_INS = {s.role: s for s in (HAPROXY, KEEPALIVED)}


class ImageError(RuntimeError):
    """A stand-in image cannot be built here."""


def _which(command: str) -> str:
    found = shutil.which(command, path="/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin")
    if not found:
        raise ImageError(f"stand-in images need the {command!r} binary on this machine")
    return str(Path(found).resolve())


_LDD = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x")


def _libraries(binary: str) -> list[str]:
    """The shared libraries `ldd` lists for a binary, the dynamic loader included."""
    done = subprocess.run(["ldd", binary], capture_output=True, text=True)
    if done.returncode != 0:
        return []  # static
    return sorted({m.group(1) for m in _LDD.finditer(done.stdout)})


def entries(stand_in: StandIn) -> list[Entry]:
    """Every file of the stand-in's root filesystem, parents before children."""
    out = {e.path: e for e in stand_in.extra}
    for path, command in stand_in.binaries.items():
        binary = _which(command)
        out[path] = Entry(path, source=binary, mode=0o755)
        for lib in _libraries(binary):
            out.setdefault(lib, Entry(lib, source=lib, mode=0o755))
    for path in list(out):
        parent = Path(path).parent
        while str(parent) != "/":
            out.setdefault(str(parent), Entry(str(parent), kind="dir", mode=0o755))
            parent = parent.parent
    return [out[p] for p in sorted(out, key=lambda p: (p.count("/"), p))]


def rootfs_tar(stand_in: StandIn) -> bytes:
    """The stand-in's root filesystem as a reproducible tarball (fixed owners, modes and times)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for e in entries(stand_in):
            info = tarfile.TarInfo(e.path.lstrip("/"))
            info.uid, info.gid, info.mode, info.mtime = e.uid, e.gid, e.mode, 0
            if e.kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif e.kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, e.text or ""
                tar.addfile(info)
            else:
                data = Path(e.source).read_bytes() if e.source else (e.text or "").encode()
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def cache_key(refs: dict[str, str]) -> str:
    """A hash of everything the images are made of: contents, Dockerfiles and their tags."""
    h = hashlib.sha256()
    for role in sorted(refs):
        stand_in = STAND_INS[role]
        h.update(f"{role}={refs[role]}\n{stand_in.dockerfile}".encode())
        for e in entries(stand_in):
            h.update(f"{e.path} {e.kind} {e.mode:o} {e.uid}:{e.gid}\n".encode())
            h.update(Path(e.source).read_bytes() if e.source else (e.text or "").encode())
    return h.hexdigest()[:16]


def cached(refs: dict[str, str]) -> Path:
    return CACHE / f"images-{cache_key(refs)}.tar"


def build(refs: dict[str, str], engine_docker, workdir: Path) -> Path:
    """Build the stand-ins tagged with `refs` (role -> image ref) in an engine, save them once.

    `engine_docker(*args)` runs the docker CLI against a running engine."""
    unknown = sorted(set(refs) - set(STAND_INS))
    if unknown:
        raise ImageError(f"no stand-in image for containers {unknown}; the lab has {sorted(STAND_INS)}")
    target = cached(refs)
    if target.exists():
        return target
    for role, ref in sorted(refs.items()):
        ctx = workdir / f"image-{role}"
        ctx.mkdir(parents=True, exist_ok=True)
        (ctx / "rootfs.tar").write_bytes(rootfs_tar(STAND_INS[role]))
        (ctx / "Dockerfile").write_text(f"{STAND_INS[role].dockerfile}LABEL {LABEL}={role}\n")
        engine_docker("build", "--quiet", "--tag", ref, str(ctx))
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    engine_docker("save", "--output", str(partial), *sorted(refs.values()))
    partial.rename(target)
    return target


def derive(engine: Engine, base: str, ref: str, workdir: Path) -> None:
    """A new tag on a node's engine: the stand-in `base` with one more label, so another image ID,
    as a version bump looks to Docker (what the operator's tool rolls as an image change)."""
    ctx = workdir / f"derive-{engine.name}"
    ctx.mkdir(parents=True, exist_ok=True)
    (ctx / "Dockerfile").write_text(f"FROM {base}\nLABEL {LABEL}.derived-as={ref}\n")
    engine.docker("build", "--quiet", "--tag", ref, str(ctx))


BUILD_NS = "kha-build"


def ensure(refs: dict[str, str], workdir: Path) -> Path:
    """The cached image tarball for `refs`, built first (by a throw-away engine) when missing."""
    target = cached(refs)
    if target.exists():
        return target
    builddir = workdir / "image-build"
    builddir.mkdir(parents=True, exist_ok=True)
    run(["ip", "netns", "add", BUILD_NS])
    engine = Engine("image-build", BUILD_NS, builddir, cgroup=BUILD_NS)
    try:
        engine.boot()
        return build(refs, engine.docker, builddir)
    finally:
        engine.power_off()
        remove_ns(BUILD_NS)
        remove_cgroups(BUILD_NS)
        shutil.rmtree(builddir, ignore_errors=True)
