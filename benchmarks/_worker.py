"""One measurement process: builds one workload's state, then times every operation of a group of libraries on it.

Run by bench.py as ``python _worker.py SPEC.json``; writes its records to the result file named in the spec after
every operation (so a crash or timeout still leaves what was measured).  Each operation is preceded by
``gc.collect()``, ``os.sync()`` (so earlier dirty pages are not written back inside the timed region) and a reset
of the RSS high-water mark (``echo 5 > /proc/self/clear_refs``), so "peak extra memory" is the high-water mark
during that operation minus the resident size just before it.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from _libs import LIBS, NotApplicable  # noqa: E402
from _workloads import Workload, build, checksum, checksum_one  # noqa: E402


# ---------------------------------------------------------------------------------------------- memory ----------
def _status(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class Memory:
    """Peak extra RSS of one operation: VmHWM after it minus VmRSS before it (HWM reset via clear_refs)."""

    def __init__(self) -> None:
        self.resettable = self._clear()
        self.base: int | None = None
        self.method = "clear_refs" if self.resettable else "hwm-delta"

    @staticmethod
    def _clear() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    def reset(self) -> None:
        if self.resettable and self._clear():
            self.base = _status("VmRSS")
        else:  # without a resettable high-water mark: growth of the HWM (a lower bound)
            self.base = _status("VmHWM")

    def peak(self) -> int | None:
        hwm = _status("VmHWM")
        if hwm is None or self.base is None:
            return None
        return max(0, hwm - self.base)


# ---------------------------------------------------------------------------------------------- files -----------
def _files(path: str) -> list[str]:
    out = []
    for root, _dirs, files in os.walk(path):
        out.extend(os.path.join(root, f) for f in files)
    return out


def fsync_tree(path: str) -> None:
    """fsync every file and directory under path (bottom-up) and path's parent: what makes a save durable."""
    for root, _dirs, files in os.walk(path, topdown=False):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = os.open(root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class Cold:
    """Evict files from the page cache: ``echo 3 > /proc/sys/vm/drop_caches`` when permitted (root), else
    ``posix_fadvise(POSIX_FADV_DONTNEED)`` on every file after writing back dirty pages."""

    def __init__(self, method: str) -> None:
        self.method = method

    def __call__(self, *paths: str) -> str:
        os.sync()
        if self.method == "drop_caches":
            try:
                with open("/proc/sys/vm/drop_caches", "w") as f:
                    f.write("3")
            except OSError:
                self.method = "fadvise"
        for path in paths:
            for name in _files(path):
                fd = os.open(name, os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)
        return self.method


def _fingerprint(package_dir: str) -> str:
    """Names, sizes and mtimes of a package's sources: tells whether the code changed between workers."""
    import hashlib

    h = hashlib.sha1()
    for root, _dirs, files in sorted(os.walk(package_dir)):
        for name in sorted(files):
            if name.endswith(".py"):
                st = os.stat(os.path.join(root, name))
                h.update(f"{root}/{name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:12]


def _warm_files(path: str) -> None:
    buf = bytearray(1 << 20)
    for name in _files(path):
        with open(name, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass


def _mem_available() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 30


PREFAULT = {"load_warm": 1, "restore_cold": 1, "load_cold": 2}  # × state size; default 1


def prefault(nbytes: int) -> None:
    """Touch and free ``nbytes`` of anonymous memory so that the pages the next operation allocates (page cache,
    new arrays) are backed by the host.  On VMs that return free guest pages to the host (free page reporting), a
    page not used for ~2 s costs ~10 µs on its first touch, which would otherwise make a write to the page cache
    run at ~0.4 GB/s or ~5 GB/s depending on luck and on the order of the operations."""
    nbytes = min(nbytes, int(_mem_available() * 0.4))
    if nbytes <= 0:
        return
    block = np.empty(nbytes, np.uint8)
    block[::4096] = 1
    del block


def _fresh_dir(path: str) -> str:
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


# ---------------------------------------------------------------------------------------------- worker ----------
class Worker:
    def __init__(self, spec: dict) -> None:
        self.spec = spec
        self.records: list[dict] = []
        self.meta: dict = {"versions": {}, "errors": []}
        self.mem = Memory()
        self.cold = Cold(spec["cold"])
        self.meta["memory_method"] = self.mem.method

    # -- bookkeeping --------------------------------------------------------------------------------------------
    def flush(self) -> None:
        tmp = self.spec["result"] + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"records": self.records, "meta": self.meta}, f)
        os.replace(tmp, self.spec["result"])

    def record(self, lib: str, op: str, **fields) -> None:
        self.records.append(dict(lib=lib, workload=self.spec["workload"], op=op, round=self.spec["round"],
                                 **fields))
        self.flush()

    def measure(self, lib, op: str, fn, verify=None, cold: str | None = None, extra=None):
        """Time fn(); record seconds, peak extra memory, and whether verify(result) held.  True if fn returned."""
        tp = time.perf_counter()
        if self.spec.get("prefault", True):  # what the operation itself needs: page cache and/or new arrays
            prefault(PREFAULT.get(op, 1) * self.wl.nbytes + (32 << 20))
        gc.collect()
        self.meta["prefault_seconds"] = self.meta.get("prefault_seconds", 0) + time.perf_counter() - tp
        self.mem.reset()
        t0 = time.perf_counter()
        try:
            out = fn()
        except NotApplicable as e:
            self.record(lib.name, op, na=str(e) or "n/a")
            return False
        except Exception as e:  # a library failing is a result, not a crash of the benchmark
            self.record(lib.name, op, error=f"{type(e).__name__}: {e}"[:400],
                        trace=traceback.format_exc()[-2000:])
            return False
        seconds = time.perf_counter() - t0
        peak = self.mem.peak()
        fields = dict(seconds=seconds, peak=peak)
        if cold:
            fields["cold"] = cold
        if extra:
            fields.update(extra(out) or {})
        if verify is not None:
            try:
                good = verify(out)
            except Exception as e:
                good = False
                fields["error"] = f"verification failed: {type(e).__name__}: {e}"[:400]
            if not good:
                fields.setdefault("error", "wrong data: checksum of what was read differs from the state's")
        self.record(lib.name, op, **fields)
        return True

    # -- main ---------------------------------------------------------------------------------------------------
    def run(self) -> None:
        spec = self.spec
        t0 = time.perf_counter()
        self.wl = build(spec["workload"], spec["size"])
        self.meta.update(nbytes=self.wl.nbytes, tensors=len(self.wl.state), description=self.wl.description,
                         build_seconds=time.perf_counter() - t0)
        libs = []
        for name in spec["libs"]:
            try:
                lib = LIBS[name](self.wl)
                self.meta["versions"][name] = lib.version()
                if name == "ckpt":
                    self.meta["ckpt_path"] = os.path.dirname(lib.ckpt.__file__)
                    self.meta["ckpt_fingerprint"] = _fingerprint(self.meta["ckpt_path"])
                libs.append(lib)
            except Exception as e:
                self.meta["errors"].append(f"{name}: {type(e).__name__}: {e}")
                self.record(name, "*", error=f"cannot start: {type(e).__name__}: {e}"[:400])
        self.flush()
        if spec["workload"] == "lookup":
            self.run_lookup([lib for lib in libs if lib.lookup_capable
                             and (lib.lookup_default or spec.get("lookup_all"))])
        else:
            self.run_bulk([lib for lib in libs if lib.bulk])
        self.meta["worker_seconds"] = time.perf_counter() - t0
        self.flush()

    def _warm_up(self, lib) -> None:
        """Exercise every code path once on a tiny state (lazy imports, first-call setup), untimed."""
        tiny = {"w/a": np.ones((4, 4), np.float32), "w/b": np.arange(3, dtype=np.int64)}
        wl = Workload("warmup", tiny, sum(a.nbytes for a in tiny.values()), "")
        d = _fresh_dir(os.path.join(self.spec["workdir"], "warmup", lib.name))
        try:
            small = type(lib)(wl)
            writer = small if small.saves else LIBS[small.source](wl)
            writer.save(writer.native(tiny), d, True)
            dest = small.dest(tiny)
            small.restore(d, dest)
            small.load(d)
        except Exception:
            pass
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def run_bulk(self, libs) -> None:
        spec, wl = self.spec, self.wl
        expected = checksum(wl.state.values())
        base = os.path.join(spec["workdir"], spec["workload"], f"r{spec['round']}")

        def verify_dest(lib, dest):
            return lambda _out: checksum(lib.dest_arrays(dest)) == expected

        natives, dests, dirs = {}, {}, {}
        t_setup = time.perf_counter()
        for lib in libs:
            try:
                if lib.saves:
                    natives[lib.name] = lib.native(wl.state)
                dests[lib.name] = lib.dest(wl.state)
            except Exception as e:
                self.record(lib.name, "*", error=f"setup failed: {type(e).__name__}: {e}"[:400])
            self._warm_up(lib)

        gc.collect()
        gc.freeze()  # the state and the libraries' objects: later collections need not scan them again
        self.meta["setup_seconds"] = time.perf_counter() - t_setup
        savers = [lib for lib in libs if lib.saves and lib.name in natives]
        # 1. save to the page cache, then durably (fsync inside the timed region).
        for lib in savers:
            native = natives[lib.name]
            d = _fresh_dir(os.path.join(base, lib.name, "save"))
            os.sync()
            self.measure(lib, "save", lambda: lib.save(native, d, False))
            shutil.rmtree(d, ignore_errors=True)
            d = _fresh_dir(os.path.join(base, lib.name, "durable"))
            os.sync()

            def durable(lib=lib, native=native, d=d):
                lib.save(native, d, True)
                if not lib.self_durable:
                    fsync_tree(d)

            if self.measure(lib, "save_durable", durable):
                dirs[lib.name] = d
        for lib in libs:
            if not lib.saves and lib.source in dirs:
                dirs[lib.name] = dirs[lib.source]

        readers = [lib for lib in libs if lib.name in dests]
        for lib in readers:
            if lib.name not in dirs:
                self.record(lib.name, "restore_warm", error="no checkpoint to read (its save failed)")
        readers = [lib for lib in readers if lib.name in dirs]

        # 2. warm: the files were just written and are in the page cache.
        for lib in readers:
            d, dest = dirs[lib.name], dests[lib.name]
            lib.clear_dest(dest)
            self.measure(lib, "restore_warm", lambda: lib.restore(d, dest), verify_dest(lib, dest))
            self.measure(lib, "load_warm", lambda: lib.load(d), lambda out: out == expected)
        # 3. cold: evicted from the page cache right before each operation.
        for lib in readers:
            d, dest = dirs[lib.name], dests[lib.name]
            lib.clear_dest(dest)
            method = self.cold(d)
            self.measure(lib, "restore_cold", lambda: lib.restore(d, dest), verify_dest(lib, dest), cold=method)
            method = self.cold(d)
            self.measure(lib, "load_cold", lambda: lib.load(d), lambda out: out == expected, cold=method)
        # 4. asynchronous save: time until the call returns, and until the checkpoint is complete and durable.
        for lib in savers:
            shutil.rmtree(os.path.join(base, lib.name), ignore_errors=True)
        # The first asynchronous save of a process, then the next one (the steady state of periodic checkpoints,
        # where a library may reuse its host buffers).
        for lib in savers:
            native = natives[lib.name]
            for op in ("async", "async_again"):
                d = _fresh_dir(os.path.join(base, lib.name, op))
                os.sync()
                box: dict = {}

                def start(lib=lib, native=native, d=d, box=box):
                    box["t0"] = time.perf_counter()
                    box["wait"] = lib.save_async(native, d)

                def finish(_out, lib=lib, d=d, box=box):
                    try:
                        box["wait"]()
                        if not lib.self_durable:
                            fsync_tree(d)
                    except Exception as e:
                        return {"error": f"asynchronous save failed: {type(e).__name__}: {e}"[:400]}
                    return {"total_seconds": time.perf_counter() - box["t0"], "peak_total": self.mem.peak()}

                # Verify ckpt's asynchronous checkpoint (a snapshot taken at the call); the peers' are trusted.
                verify = (lambda _out, lib=lib, d=d: lib.load(d) == expected) if lib.name == "ckpt" else None
                if not self.measure(lib, op, start, verify=verify, extra=finish):
                    break
                shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)

    def run_lookup(self, libs) -> None:
        spec, wl = self.spec, self.wl
        target = wl.target
        expected = checksum_one(wl.state[target])
        root = os.path.join(spec["workdir"], "lookup")
        gc.collect()
        gc.freeze()
        for lib in libs:
            d = os.path.join(root, "files", lib.name)
            if not os.path.isdir(d):  # written once (round 1), untimed, reused by later rounds
                tmp = _fresh_dir(d + ".tmp")
                try:
                    lib.lookup_setup(wl.state, tmp)
                except Exception as e:
                    self.record(lib.name, "lookup_cold", error=f"setup failed: {type(e).__name__}: {e}"[:400])
                    shutil.rmtree(tmp, ignore_errors=True)
                    continue
                os.replace(tmp, d)
                os.sync()
            # Cold: the first open of this checkpoint in this process, right after evicting its files.
            method = self.cold(d)
            self.measure(lib, "lookup_cold", lambda: checksum_one(lib.lookup(d, target)),
                         lambda out: out == expected, cold=method)
            # Warm: files in the page cache, opened under another path (hard links to the same inodes) so that
            # no per-path cache inside a library can help.
            alias = _fresh_dir(os.path.join(root, "alias", f"r{spec['round']}", lib.name))
            shutil.rmtree(alias)
            shutil.copytree(d, alias, copy_function=os.link)
            _warm_files(alias)
            self.measure(lib, "lookup_warm", lambda: checksum_one(lib.lookup(alias, target)),
                         lambda out: out == expected)
            shutil.rmtree(alias, ignore_errors=True)


def main() -> None:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    worker = Worker(spec)
    try:
        worker.run()
    except Exception as e:
        worker.meta["errors"].append(f"worker crashed: {type(e).__name__}: {e}\n{traceback.format_exc()[-3000:]}")
        worker.flush()
        raise


if __name__ == "__main__":
    main()
