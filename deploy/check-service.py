#!/usr/bin/env python3
"""Checks deploy/kes.service on the layout of the KES docs, without a running systemd (CI has
none as PID 1).

In a private mount namespace (nothing it does is seen outside it) it lays out:
  /usr/local/bin/kes (this checkout's binary), the `kes` user (`useradd --system`),
  /etc/kes/config.yml with relative paths (tls: {key: private.key, cert: public.crt},
  keystore: {fs: {path: ./keys}}), /etc/kes/private.key, public.crt, /etc/kes/keys/ owned
  by kes
(/etc, /usr/local/bin and /var/lib are overlays on tmpfs there), then runs the unit's
ExecStart as systemd would: `systemd-analyze verify` first; User/Group; WorkingDirectory;
AmbientCapabilities and CapabilityBoundingSet (setpriv); NoNewPrivileges; LimitNOFILE (at
most the hard limit this machine allows); StateDirectory (created, owned by the user);
ProtectSystem=strict for /etc/kes (read-only but for ReadWritePaths). LimitMEMLOCK is not
applied (raising a hard limit needs CAP_SYS_RESOURCE, which CI's container may lack; with
the unit's CAP_IPC_LOCK the limit does not apply to mlockall anyway).

Checks (issue 21, item 13): the unit verifies; the server starts from the documented layout
(with --mlock if ExecStart has it); `kes key create` lands in /etc/kes/keys; ExecReload
(SIGHUP) keeps it serving; KillSignal stops it with exit status 0 within TimeoutStopSec.

Needs root.  python3 deploy/check-service.py [--unit FILE] [--kes BINARY]
"""
import argparse
import json
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
failures = []


def check(name, ok, detail=""):
    if ok:
        print(f"ok   {name}")
    else:
        print(f"FAIL {name}" + (f": {detail}" if detail else ""))
        failures.append(name)


def die(msg):
    print(f"check-service: {msg}", file=sys.stderr)
    sys.exit(1)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def parse_unit(path):
    """{section: [(key, value)]}, continuation lines joined."""
    sections, section, cur = {}, None, ""
    for raw in open(path):
        line = raw.rstrip("\n")
        if not cur and (not line.strip() or line.lstrip()[:1] in "#;"):
            continue
        if line.endswith("\\"):
            cur += line[:-1] + " "
            continue
        line, cur = (cur + line).strip(), ""
        m = re.fullmatch(r"\[(.+)\]", line)
        if m:
            section = sections.setdefault(m.group(1), [])
            continue
        key, _, value = line.partition("=")
        section.append((key.strip(), value.strip()))
    return sections


def get(entries, key, default=None):
    values = [v for k, v in entries if k == key]
    return values[-1] if values else default


def get_all(entries, key):
    out = []
    for k, v in entries:
        if k == key:
            out += v.split() if v else []
    return out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serving(port, proc, seconds=20):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.2)
    return False


def overlay(path, scratch):
    upper, work = os.path.join(scratch, "upper"), os.path.join(scratch, "work")
    os.makedirs(upper)
    os.makedirs(work)
    run(["mount", "-t", "overlay", "overlay", "-o",
         f"lowerdir={path},upperdir={upper},workdir={work}", path])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--unit", default=os.path.join(REPO, "deploy/kes.service"))
    ap.add_argument("--kes", help="the kes binary (default: cargo build --bin kes)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        die("needs root (mount namespace, useradd, setpriv); run it as root or with sudo")
    for tool in ("setpriv", "systemd-analyze", "useradd", "unshare"):
        if shutil.which(tool) is None:
            die(f"needs {tool} (Debian: util-linux, systemd, passwd)")
    unit_path = os.path.abspath(args.unit)
    kes_bin = args.kes
    if kes_bin is None:
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
        run(["cargo", "build", "--locked", "--bin", "kes"], cwd=REPO)
        kes_bin = os.path.join(target, "debug/kes")
    kes_bin = os.path.abspath(kes_bin)
    if os.environ.get("CHECK_SERVICE_NS") != "1":
        os.environ["CHECK_SERVICE_NS"] = "1"
        os.execvp("unshare", ["unshare", "--mount", "--propagation", "private", sys.executable,
                              os.path.abspath(__file__), "--unit", unit_path, "--kes", kes_bin])

    scratch = tempfile.mkdtemp(prefix="kes-service-")
    try:
        run(["mount", "-t", "tmpfs", "tmpfs", scratch])
        for i, path in enumerate(["/etc", "/usr/local/bin", "/var/lib"]):
            overlay(path, os.path.join(scratch, str(i)))
        checks(unit_path, kes_bin, scratch)
    finally:
        subprocess.run(["umount", "-R", scratch], stderr=subprocess.DEVNULL)
        shutil.rmtree(scratch, ignore_errors=True)
    if failures:
        print(f"service check: {len(failures)} failed: {', '.join(failures)}")
        sys.exit(1)
    print("service check: all passed")


def checks(unit_path, kes_bin, scratch):
    unit = parse_unit(unit_path)
    svc = unit.get("Service", [])
    user, group = get(svc, "User", "root"), get(svc, "Group")

    # The documented installation.
    shutil.copy2(kes_bin, "/usr/local/bin/kes")
    if subprocess.run(["id", "-u", user], capture_output=True).returncode != 0:
        run(["useradd", "--system", "--no-create-home", user])
    uid = int(subprocess.check_output(["id", "-u", user]))
    gid = int(subprocess.check_output(["id", "-g", group or user]))
    os.makedirs("/etc/kes/keys")
    os.chown("/etc/kes/keys", uid, gid)
    run(["/usr/local/bin/kes", "identity", "new", "--key", "/etc/kes/private.key", "--cert",
         "/etc/kes/public.crt", "--ip", "127.0.0.1", "kes"], stdout=subprocess.DEVNULL)
    os.chown("/etc/kes/private.key", 0, gid)
    os.chmod("/etc/kes/private.key", 0o640)
    new = json.loads(subprocess.check_output(["/usr/local/bin/kes", "identity", "new", "--json"],
                                             text=True))
    api_key, identity = new["api_key"], new["identity"]
    port = free_port()
    with open("/etc/kes/config.yml", "w") as f:
        f.write(f"""address: 127.0.0.1:{port}
admin:
  identity: {identity}
tls:
  key: private.key
  cert: public.crt
keystore:
  fs:
    path: ./keys
""")

    r = subprocess.run(["systemd-analyze", "verify", unit_path], capture_output=True, text=True)
    check("systemd-analyze verify", r.returncode == 0, (r.stdout + r.stderr).strip())

    # The sandbox systemd would set up (the parts that matter for this layout).
    for d in get_all(svc, "StateDirectory"):
        os.makedirs(f"/var/lib/{d}", exist_ok=True)
        os.chown(f"/var/lib/{d}", uid, gid)
    if get(svc, "ProtectSystem") in ("strict", "full", "yes"):
        run(["mount", "--bind", "/etc/kes", "/etc/kes"])
        run(["mount", "-o", "remount,bind,ro", "/etc/kes"])
        for p in get_all(svc, "ReadWritePaths"):
            optional = p.startswith("-")
            p = p.lstrip("-+")
            if not os.path.exists(p):
                if not optional:
                    check(f"ReadWritePaths {p} exists", False, "systemd refuses to start")
                continue
            if p.startswith("/etc/kes"):
                run(["mount", "--bind", p, p])
                run(["mount", "-o", "remount,bind,rw", p])
    workdir = get(svc, "WorkingDirectory", "/").lstrip("-")
    caps = [c.lower().removeprefix("cap_") for c in get_all(svc, "AmbientCapabilities")]
    bounding = [c.lower().removeprefix("cap_") for c in get_all(svc, "CapabilityBoundingSet")]
    setpriv = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--init-groups"]
    if caps:
        setpriv += ["--inh-caps=-all," + ",".join("+" + c for c in caps),
                    "--ambient-caps=" + ",".join("+" + c for c in caps)]
    if bounding:
        setpriv += ["--bounding-set=-all," + ",".join("+" + c for c in bounding)]
    if get(svc, "NoNewPrivileges") == "yes":
        setpriv.append("--no-new-privs")
    nofile = get(svc, "LimitNOFILE")
    if nofile:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        n = min(int(nofile), hard) if hard != resource.RLIM_INFINITY else int(nofile)
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    exec_start = shlex.split(get(svc, "ExecStart", "").lstrip("-@+!"))
    print(f"== ExecStart {exec_start} in {workdir} as {user}")

    log = tempfile.TemporaryFile()
    try:
        proc = subprocess.Popen(setpriv + ["--"] + exec_start, cwd=workdir, stdout=log,
                                stderr=subprocess.STDOUT)
    except OSError as err:
        check("ExecStart starts", False, str(err))
        return

    def output():
        log.seek(0)
        return log.read().decode(errors="replace").strip()[-800:]

    try:
        ok = serving(port, proc)
        check("ExecStart serves from the documented layout (relative paths under /etc/kes)", ok,
              output())
        if not ok:
            return
        if "--mlock" in exec_start:
            check("memory locked (--mlock with the unit's capabilities)",
                  "MLock       enabled" in output(), output())
        env = dict(os.environ, KES_SERVER=f"https://127.0.0.1:{port}", KES_API_KEY=api_key)
        r = subprocess.run(["/usr/local/bin/kes", "key", "create", "service-check-key", "-k"],
                           env=env, capture_output=True, text=True)
        check("kes key create writes to ./keys (/etc/kes/keys)",
              r.returncode == 0 and os.path.exists("/etc/kes/keys/service-check-key"),
              (r.stdout + r.stderr).strip())
        if "$MAINPID" in get(svc, "ExecReload", "") and "HUP" in get(svc, "ExecReload", ""):
            proc.send_signal(signal.SIGHUP)
            time.sleep(1)
            r = subprocess.run(["/usr/local/bin/kes", "key", "dek", "service-check-key", "-k"],
                               env=env, capture_output=True, text=True)
            check("ExecReload (SIGHUP): still serving", proc.poll() is None and
                  r.returncode == 0, (r.stdout + r.stderr).strip() + output())
        sig = getattr(signal, get(svc, "KillSignal", "SIGTERM"))
        timeout = int(re.sub(r"s$", "", get(svc, "TimeoutStopSec", "90")))
        proc.send_signal(sig)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        check(f"KillSignal stops it with status 0 within {timeout}s", code == 0,
              f"exit {code}: {output()}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
