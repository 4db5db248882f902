#!/usr/bin/env python3
"""Checks deploy/Dockerfile's runtime image without a container daemon (CI has none).

It lays out the file tree the runtime stage produces and runs the image's commands in it:
  * FROM debian:<suite>-slim: a Debian <suite> minbase tree from mmdebstrap (what the slim
    image is, less the documentation it strips);
  * RUN: each step, run by /bin/sh in a chroot of the tree (as Docker does, with the host's
    resolv.conf for apt);
  * COPY --from=<build stage>: the build stage must produce the copied path (its WORKDIR and
    `cargo build --release ... --bin <name>`: <WORKDIR>/target/release/<name>); the binary
    copied is this checkout's `kes` built here by cargo (a debug build: same source, and the
    release build is only an optimisation the check does not depend on);
  * USER, WORKDIR, ENTRYPOINT and CMD are honoured when the image's commands are run: in a
    chroot of the tree, read-only (`docker run --read-only`), with /etc/kes bind-mounted from
    a test config, as the image's user with no capabilities and Docker's default memlock
    limit (64 KiB) unless a check says otherwise.

Checks (issue 21, items 10-12): /kes is the kes binary and runs with the tree's libc; the
system CA bundle is there and the server finds it (`tls.auth: on` without `tls.ca` starts
only where system CAs are found); ENTRYPOINT + CMD start without capabilities; `--mlock`
added to them fails with the reason under the default memlock limit and starts with
CAP_IPC_LOCK; the MinIO Operator's `server --config=... --auth=off` as another uid
(1000) serves, and `./kes key create` from the WORKDIR works against it.

Needs root (chroot, bind mounts in a private mount namespace) and mmdebstrap.
  python3 deploy/check-image.py [--dockerfile FILE] [--kes BINARY] [--keep DIR] [--base TAR]
"""
import argparse
import json
import os
import re
import resource
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DOCKER_MEMLOCK = 64 * 1024

failures = []


def check(name, ok, detail=""):
    if ok:
        print(f"ok   {name}")
    else:
        print(f"FAIL {name}" + (f": {detail}" if detail else ""))
        failures.append(name)


def die(msg):
    print(f"check-image: {msg}", file=sys.stderr)
    sys.exit(1)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


# ---------------------------------------------------------------------------- Dockerfile


def parse_dockerfile(path):
    """Stages: [{'name', 'base', 'steps': [(INSTRUCTION, args)]}]."""
    logical, cur = [], ""
    for raw in open(path):
        line = raw.rstrip("\n")
        if line.lstrip().startswith("#") and not cur:
            continue
        if line.lstrip().startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            cur += line[:-1] + " "
            continue
        cur += line
        if cur.strip():
            logical.append(cur.strip())
        cur = ""
    stages = []
    for line in logical:
        instr, _, args = line.partition(" ")
        instr = instr.upper()
        args = args.strip()
        if instr == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append({"name": name, "base": words[0], "steps": []})
        elif not stages:
            die(f"{path}: {instr} before FROM")
        else:
            stages[-1]["steps"].append((instr, args))
    return stages


def exec_form(args):
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        return ["/bin/sh", "-c", args]
    if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        die(f"not an exec form: {args}")
    return value


def build_stage_output(stage, path):
    """The file a build stage's `cargo build --release ... --bin NAME` writes at `path`."""
    workdir = "/"
    for instr, args in stage["steps"]:
        if instr == "WORKDIR":
            workdir = os.path.join(workdir, args)
        elif instr == "RUN":
            m = re.search(r"cargo build\b(.*)", args)
            if not m or "--release" not in m.group(1).split():
                continue
            bins = re.findall(r"--bin[ =](\S+)", m.group(1))
            for b in bins:
                if os.path.normpath(path) == os.path.join(workdir, "target/release", b):
                    return b
    return None


# ---------------------------------------------------------------------------- the tree


def inside(tree, path):
    """`path` of the image, resolved within `tree` (absolute symlinks stay in the tree)."""
    parts = [p for p in path.split("/") if p]
    resolved = ""
    hops = 0
    while parts:
        p = parts.pop(0)
        candidate = resolved + "/" + p
        host = tree + candidate
        if os.path.islink(host):
            hops += 1
            if hops > 40:
                return None
            target = os.readlink(host)
            if target.startswith("/"):
                resolved = ""
            parts = [q for q in target.split("/") if q] + parts
            continue
        if p == "..":
            resolved = os.path.dirname(resolved)
        elif p != ".":
            resolved = candidate
    return tree + (resolved or "/")


def user_ids(tree, user):
    name, _, group = user.partition(":")
    uid = gid = None
    for line in open(os.path.join(tree, "etc/passwd")):
        f = line.strip().split(":")
        if len(f) >= 4 and (f[0] == name or f[2] == name):
            uid, gid = int(f[2]), int(f[3])
    if uid is None:
        if not name.isdigit():
            die(f"USER {user}: no such user in the image")
        uid, gid = int(name), 0
    if group:
        gid = int(group)
    return uid, gid


def lay_out(stages, tree, kes_bin, base_tar):
    runtime = stages[-1]
    m = re.fullmatch(r"(?:docker\.io/)?(?:library/)?debian:(\w+)-slim", runtime["base"])
    if not m:
        die(f"runtime stage FROM {runtime['base']}: only debian:<suite>-slim is emulated")
    suite = m.group(1)
    os.makedirs(tree)
    if base_tar:
        print(f"== FROM {runtime['base']}: {base_tar}")
        run(["tar", "-xf", base_tar, "-C", tree])
    else:
        print(f"== FROM {runtime['base']}: mmdebstrap --variant=minbase {suite}")
        run(["mmdebstrap", "--variant=minbase", "--quiet", suite, tree])
    state = {"user": "root", "workdir": "/", "env": {"PATH": DEFAULT_PATH}, "entrypoint": [],
             "cmd": []}
    for instr, args in runtime["steps"]:
        if instr == "RUN":
            print(f"== RUN {args}")
            resolv = os.path.join(tree, "etc/resolv.conf")
            had = os.path.lexists(resolv)
            if not had:
                shutil.copy("/etc/resolv.conf", resolv)
            uid, gid = user_ids(tree, state["user"])
            try:
                subprocess.run(["/bin/sh", "-c", args], check=True, env=state["env"],
                               preexec_fn=enter(tree, state["workdir"], uid, gid, None))
            finally:
                if not had and os.path.lexists(resolv):
                    os.unlink(resolv)
        elif instr == "COPY":
            words = shlex.split(args)
            src_stage = None
            while words and words[0].startswith("--"):
                flag = words.pop(0)
                if flag.startswith("--from="):
                    src_stage = flag.split("=", 1)[1]
                else:
                    die(f"COPY {flag}: not emulated")
            *srcs, dst = words
            for src in srcs:
                if src_stage is not None:
                    stage = next((s for s in stages if s["name"] == src_stage), None)
                    if stage is None:
                        die(f"COPY --from={src_stage}: no such stage")
                    binary = build_stage_output(stage, src)
                    if binary != "kes":
                        die(f"COPY --from={src_stage} {src}: the stage does not build it "
                            "(want WORKDIR + `cargo build --release ... --bin kes`)")
                    host_src = kes_bin
                else:
                    host_src = os.path.join(REPO, src)
                target = os.path.join(state["workdir"], dst)
                if dst.endswith("/"):
                    target = os.path.join(target, os.path.basename(src))
                host_dst = tree + os.path.normpath(target)
                os.makedirs(os.path.dirname(host_dst), exist_ok=True)
                print(f"== COPY {host_src} -> {target}")
                shutil.copy2(host_src, host_dst)
        elif instr == "USER":
            state["user"] = args
        elif instr == "WORKDIR":
            state["workdir"] = os.path.normpath(os.path.join(state["workdir"], args))
            os.makedirs(tree + state["workdir"], exist_ok=True)
        elif instr == "ENV":
            k, _, v = args.partition("=")
            state["env"][k.strip()] = v.strip().strip('"')
        elif instr == "ENTRYPOINT":
            state["entrypoint"] = exec_form(args)
            state["cmd"] = []
        elif instr == "CMD":
            state["cmd"] = exec_form(args)
        elif instr in ("EXPOSE", "LABEL", "STOPSIGNAL"):
            pass
        else:
            die(f"{instr}: not emulated")
    return state


def enter(root, workdir, uid, gid, memlock):
    """A preexec_fn: chroot, chdir, rlimit, drop to uid/gid (which drops every capability)."""

    def f():
        os.chroot(root)
        os.chdir(workdir)
        if memlock is not None:
            resource.setrlimit(resource.RLIMIT_MEMLOCK, (memlock, memlock))
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
        if uid != 0 and open("/proc/self/status").read().find("CapEff:\t0000000000000000") < 0:
            os._exit(99)

    return f


# ---------------------------------------------------------------------------- runs


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, tree, state, argv, uid, gid, memlock, env=None):
        self.log = tempfile.TemporaryFile()
        e = dict(state["env"])
        e.update(env or {})
        try:
            self.proc = subprocess.Popen(argv, env=e, stdout=self.log,
                                         stderr=subprocess.STDOUT,
                                         preexec_fn=enter(tree, state["workdir"], uid, gid,
                                                          memlock))
        except OSError as err:  # e.g. no such executable in the image
            self.log.write(f"cannot run {argv[0]}: {err}".encode())
            self.proc = subprocess.Popen(["false"])

    def output(self):
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def wait_ready(self, port, seconds=20):
        """True once the port accepts connections; False if the process ended first."""
        deadline = time.time() + seconds
        while time.time() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                time.sleep(0.2)
        return False

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dockerfile", default=os.path.join(REPO, "deploy/Dockerfile"))
    ap.add_argument("--kes", help="the kes binary to copy (default: cargo build --bin kes)")
    ap.add_argument("--keep", help="lay the tree out here and keep it")
    ap.add_argument("--base", help="a tarball of the base tree made earlier by "
                    "`mmdebstrap --variant=minbase <suite> FILE.tar` (local reruns)")
    args = ap.parse_args()

    if os.geteuid() != 0:
        die("needs root (chroot and bind mounts); run it as root or with sudo")
    if shutil.which("mmdebstrap") is None:
        die("needs mmdebstrap (apt-get install mmdebstrap)")
    if os.environ.get("CHECK_IMAGE_NS") != "1":
        # A private mount namespace: every mount below disappears with the process.
        os.environ["CHECK_IMAGE_NS"] = "1"
        os.execvp("unshare", ["unshare", "--mount", "--propagation", "private", sys.executable,
                              os.path.abspath(__file__)] + sys.argv[1:])

    kes_bin = args.kes
    if kes_bin is None:
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
        run(["cargo", "build", "--locked", "--bin", "kes"], cwd=REPO)
        kes_bin = os.path.join(target, "debug/kes")

    stages = parse_dockerfile(args.dockerfile)
    work = args.keep or tempfile.mkdtemp(prefix="kes-image-")
    tree = os.path.join(work, "rootfs")
    if os.path.exists(tree):
        shutil.rmtree(tree)
    try:
        state = lay_out(stages, tree, kes_bin, args.base)
        checks(tree, state, work, kes_bin)
    finally:
        if not args.keep:
            subprocess.run(["umount", "-R", tree], stderr=subprocess.DEVNULL)
            shutil.rmtree(work, ignore_errors=True)
    if failures:
        print(f"image check: {len(failures)} failed: {', '.join(failures)}")
        sys.exit(1)
    print("image check: all passed")


def checks(tree, state, work, kes_bin):
    entry, cmd = state["entrypoint"], state["cmd"]
    print(f"== image: USER {state['user']}, WORKDIR {state['workdir']}, "
          f"ENTRYPOINT {entry}, CMD {cmd}")
    uid, gid = user_ids(tree, state["user"])

    # Test material on the host: /etc/kes (config, server key and certificate) and a volume
    # for the fs keystore.
    etc = os.path.join(work, "etc-kes")
    data = os.path.join(work, "data")
    os.makedirs(etc, exist_ok=True)
    os.makedirs(os.path.join(data, "keys"), exist_ok=True)
    subprocess.run([kes_bin, "identity", "new", "--key", os.path.join(etc, "private.key"),
                    "--cert", os.path.join(etc, "public.crt"), "--ip", "127.0.0.1", "kes"],
                   check=True, stdout=subprocess.DEVNULL)
    new = json.loads(subprocess.run([kes_bin, "identity", "new", "--json"], check=True,
                                    capture_output=True, text=True).stdout)
    api_key, identity = new["api_key"], new["identity"]
    port = free_port()
    for f in os.listdir(etc):
        os.chmod(os.path.join(etc, f), 0o644)  # any uid in the container reads them
    with open(os.path.join(etc, "auth-on.yml"), "w") as f:
        f.write(f"""address: 127.0.0.1:{port}
admin:
  identity: {identity}
tls:
  key: /etc/kes/private.key
  cert: /etc/kes/public.crt
  # On, with no tls.ca: starts only if the system CA bundle is found.
  auth: on
keystore:
  fs:
    path: /data/keys
""")
    # The image's default config path and the MinIO Operator's: client certificates not
    # verified (API keys).
    with open(os.path.join(etc, "auth-on.yml")) as f:
        auth_off = f.read().replace("auth: on", "auth: off")
    for name in ("config.yml", "server-config.yaml"):
        with open(os.path.join(etc, name), "w") as f:
            f.write(auth_off)
    for d in (data, os.path.join(data, "keys")):
        os.chown(d, uid, gid)
        os.chmod(d, 0o777)  # also for the other uid below

    # The tree as `docker run --read-only -v etc:/etc/kes:ro -v data:/data` sees it.
    os.makedirs(tree + "/etc/kes", exist_ok=True)
    os.makedirs(tree + "/data", exist_ok=True)
    run(["mount", "--bind", tree, tree])
    run(["mount", "--bind", "/proc", tree + "/proc"])
    run(["mount", "--bind", "/dev", tree + "/dev"])
    run(["mount", "--bind", "-o", "ro", etc, tree + "/etc/kes"])
    run(["mount", "--bind", data, tree + "/data"])
    run(["mount", "-o", "remount,bind,ro", tree])

    # /kes (item 11).
    kes = inside(tree, "/kes")
    ok = kes is not None and os.path.isfile(kes) and os.access(kes, os.X_OK)
    check("/kes exists and is executable", ok, "no /kes in the image")
    if ok:
        r = subprocess.run(["/kes", "--version"], capture_output=True, text=True, env=state["env"],
                           preexec_fn=enter(tree, "/", uid, gid, DOCKER_MEMLOCK))
        check("/kes runs with the image's libc", r.returncode == 0 and "kes" in r.stdout,
              (r.stdout + r.stderr).strip())

    # The CA bundle (item 10).
    bundle = tree + "/etc/ssl/certs/ca-certificates.crt"
    n = open(bundle).read().count("BEGIN CERTIFICATE") if os.path.isfile(bundle) else 0
    check("the system CA bundle /etc/ssl/certs/ca-certificates.crt", n >= 100,
          f"{n} certificates")

    if not entry and not cmd:
        check("the image has a command", False)
        return

    # The server finds the system CAs: with `tls.auth: on` and no `tls.ca` it starts only
    # where it finds some (item 10).
    s = Server(tree, state, ["/usr/local/bin/kes", "server", "--config", "/etc/kes/auth-on.yml"],
               uid, gid, DOCKER_MEMLOCK)
    ok = s.wait_ready(port)
    s.stop()
    check("the server finds the system CAs (tls.auth: on without tls.ca starts)", ok,
          s.output().strip()[-600:])

    # ENTRYPOINT + CMD as is: no capability, Docker's default memlock limit (item 12).
    s = Server(tree, state, entry + cmd, uid, gid, DOCKER_MEMLOCK)
    ok = s.wait_ready(port)
    s.stop()
    check("ENTRYPOINT + CMD start without capabilities", ok, s.output().strip()[-600:])

    # --mlock asked for: a hard error where memory cannot be locked ...
    mlock = cmd if "--mlock" in cmd else cmd + ["--mlock"]
    s = Server(tree, state, entry + mlock, uid, gid, DOCKER_MEMLOCK)
    try:
        code = s.proc.wait(20)
    except subprocess.TimeoutExpired:
        code = None
    s.stop()
    out = s.output()
    check("--mlock without IPC_LOCK/memlock fails with the reason",
          code not in (None, 0) and "--mlock: cannot lock memory" in out,
          f"exit {code}: {out.strip()[-600:]}")
    # ... and starts where memory can be locked. `--ulimit memlock=-1` allows it to any uid;
    # raising the hard limit needs CAP_SYS_RESOURCE, which CI's container may lack, so the
    # image's user gets CAP_IPC_LOCK instead (setpriv from the image's util-linux, as root).
    lock = ["/usr/bin/setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
            "--inh-caps=-all,+ipc_lock", "--ambient-caps=+ipc_lock", "--"]
    s = Server(tree, state, lock + entry + mlock, 0, 0, None)
    ok = s.wait_ready(port)
    s.stop()
    check("--mlock where memory can be locked (CAP_IPC_LOCK) starts, memory locked",
          ok and "MLock       enabled" in s.output(), s.output().strip()[-600:])

    # The MinIO Operator's invocation (its uid 1000) and a relative ./kes from the WORKDIR
    # (item 11), as upstream's image allows.
    op = ["/kes", "server", "--config=/etc/kes/server-config.yaml", "--auth=off"]
    s = Server(tree, state, op, 1000, 1000, DOCKER_MEMLOCK)
    try:
        ok = s.wait_ready(port)
        check("/kes server --config=... --auth=off as uid 1000", ok, s.output().strip()[-600:])
        if ok:
            env = dict(state["env"], KES_SERVER=f"https://127.0.0.1:{port}", KES_API_KEY=api_key)
            r = subprocess.run(["./kes", "key", "create", "image-check-key", "-k"], env=env,
                               capture_output=True, text=True,
                               preexec_fn=enter(tree, state["workdir"], 1000, 1000,
                                                DOCKER_MEMLOCK))
            check(f"./kes key create from the WORKDIR ({state['workdir']})", r.returncode == 0,
                  (r.stdout + r.stderr).strip())
    finally:
        s.stop()


if __name__ == "__main__":
    main()
