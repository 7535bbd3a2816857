#!/usr/bin/env python3
"""Static resource check of every CUDA kernel, from ptxas's own report of the build.

    python3 scripts/kernel_resources.py [--build build] [--arch sm_90] [--launches FILE ...]
                                        [--out bench/KERNEL_RESOURCES.md] [--write-launches FILE]

Reads the <object>.ptxas.log files that the CUDA build leaves beside its kernel objects
(CMakeLists.txt, CTSR_PTXAS_LOG: `-Xptxas=-v` through scripts/ptxas_log.sh) and, per kernel
compiled for --arch: registers, static shared memory, stack frame and spill stores/loads. The
largest block each kernel is launched with comes from launch logs of the CUDA-on-CPU executor
(CTSR_EXECUTOR_LAUNCH_LOG=FILE on any ctsr program or test appends "<threads>\\t<kernel>" lines at
exit; the executor's kernels live in ctsr::kernels::cuda_on_cpu where nvcc's are in
ctsr::kernels::cuda). bench/kernel_launches.tsv is the committed table of them, merged from the
test suite's runs; --write-launches rewrites it from the logs given. A kernel found in no log is
taken at the worst case, 1024 threads.

Writes a Markdown table (--out) and exits 1 when any kernel
  - needs more registers than an SM has for its largest block (registers x threads > 65,536),
  - uses more than 48 KiB of static shared memory, or
  - spills (ptxas's "bytes spill stores/loads"), unless ALLOWED_SPILLS below names it with the
    reason it is not on the training path.
Python 3 standard library only (and c++filt, from binutils, for the names).
"""

import argparse
import collections
import pathlib
import re
import subprocess
import sys

REGISTERS_PER_SM = 65536
STATIC_SHARED_LIMIT = 48 * 1024
WORST_CASE_BLOCK = 1024

# Kernels allowed to spill: a demangled-name prefix (after the namespace) and why it is not on the
# training path. Kernels of tests/*.cu (the executor's own tests) are never on it.
ALLOWED_SPILLS = {}

ENTRY = re.compile(r"^ptxas info\s*: Compiling entry function '([^']+)' for '([^']+)'")
PROPERTIES = re.compile(r"^ptxas info\s*: Function properties for (\S+)")
FRAME = re.compile(r"^\s*(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
USED = re.compile(r"^ptxas info\s*: Used (\d+) registers")
SMEM = re.compile(r"(\d+) bytes smem")
NAMESPACES = re.compile(r"^(?:void )?ctsr::kernels::cuda(?:_on_cpu)?::(?:\(anonymous namespace\)::)?")


class Kernel:
    def __init__(self, mangled, source):
        self.mangled = mangled
        self.source = source  # the .cu file's stem (its family) or tests/<stem>
        self.name = ""
        self.registers = 0
        self.smem = 0
        self.stack = 0
        self.spill_stores = 0
        self.spill_loads = 0
        self.block = None  # largest launched block, from the launch logs
        self.problems = []


def fail(message):
    print(f"kernel_resources: {message}", file=sys.stderr)
    sys.exit(2)


def parse_log(path, arch, source, kernels):
    """Adds the kernels that `path` (one object's ptxas report) compiles for `arch`."""
    current = None  # the entry function being reported on, when its arch is the one wanted
    properties_of = None
    for line in path.read_text(errors="replace").splitlines():
        m = ENTRY.match(line)
        if m:
            current = Kernel(m.group(1), source) if m.group(2) == arch else None
            if current:
                kernels[current.mangled] = current
            properties_of = None
            continue
        m = PROPERTIES.match(line)
        if m:
            properties_of = m.group(1)
            continue
        m = FRAME.match(line)
        if m and current and properties_of == current.mangled:
            current.stack, current.spill_stores, current.spill_loads = (int(g) for g in m.groups())
            continue
        m = USED.match(line)
        if m and current:
            current.registers = int(m.group(1))
            s = SMEM.search(line)
            current.smem = int(s.group(1)) if s else 0


def demangle(names):
    if not names:
        return []
    try:
        out = subprocess.run(["c++filt"], input="\n".join(names) + "\n", capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        fail(f"c++filt (binutils) could not demangle the kernel names: {e}")
    lines = out.stdout.splitlines()
    if len(lines) != len(names):
        fail(f"c++filt returned {len(lines)} names for {len(names)}")
    return lines


def short_name(demangled):
    """The name without ctsr::kernels::cuda[_on_cpu]::(anonymous namespace)::."""
    # nvcc names an anonymous namespace after its file (_GLOBAL__N__<hash>_<file>_<hash>), which
    # c++filt prints as "(anonymous namespace)" too.
    return NAMESPACES.sub("", demangled.replace("ctsr::kernels::cuda_on_cpu::", "ctsr::kernels::cuda::"))


def without_parameters(name):
    """'f<a, b>(int, float)' -> 'f<a, b>'."""
    depth = 0
    for i, c in enumerate(name):
        if c == "<":
            depth += 1
        elif c == ">":
            depth -= 1
        elif c == "(" and depth == 0 and i > 0:
            return name[:i]
    return name


def read_launches(paths):
    """{short name: largest threads} over every launch log."""
    largest = {}
    line_re = re.compile(r"^(\d+)\t(.+)$")
    for path in paths:
        try:
            text = path.read_text(errors="replace")
        except OSError as e:
            fail(f"cannot read the launch log {path}: {e}; expected lines '<threads>\\t<kernel>' "
                 "(CTSR_EXECUTOR_LAUNCH_LOG)")
        for line in text.splitlines():
            m = line_re.match(line)
            if not m:
                continue  # a line two processes wrote into each other, or a comment
            name = short_name(m.group(2))
            largest[name] = max(largest.get(name, 0), int(m.group(1)))
    return largest


def write_launches(path, largest):
    lines = ["# Largest block per kernel launched by the test suite on the CUDA-on-CPU executor",
             "# (CTSR_EXECUTOR_LAUNCH_LOG; scripts/kernel_resources.py --write-launches). <threads>\\t<kernel>"]
    lines += [f"{t}\t{n}" for n, t in sorted(largest.items())]
    path.write_text("\n".join(lines) + "\n")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--build", default="build", help="the CUDA build folder (default build)")
    p.add_argument("--arch", default="sm_90", help="the architecture whose code is checked (default sm_90)")
    p.add_argument("--launches", nargs="*", default=None,
                   help="launch logs (default bench/kernel_launches.tsv)")
    p.add_argument("--write-launches", help="write the merged launch table here")
    p.add_argument("--out", default="bench/KERNEL_RESOURCES.md", help="the Markdown report ('-': stdout only)")
    a = p.parse_args()

    root = pathlib.Path(__file__).resolve().parent.parent
    build = pathlib.Path(a.build)
    logs = sorted(build.rglob("*.ptxas.log"))
    if not logs:
        fail(f"no *.ptxas.log under {build}: expected a build configured with -DCTSR_CUDA=ON "
             "-DCTSR_PTXAS_LOG=ON (the default), built")
    kernels = {}
    for log in logs:
        stem = log.name.split(".")[0]
        source = f"tests/{stem}" if "ctsr_test_kernels" in str(log) else stem
        parse_log(log, a.arch, source, kernels)
    if not kernels:
        fail(f"the {len(logs)} ptxas logs under {build} report no kernel for {a.arch}: "
             "expected the build's CTSR_CUDA_ARCHS to include it (CI: 90)")
    ordered = sorted(kernels.values(), key=lambda k: (k.source, k.mangled))
    for k, name in zip(ordered, demangle([k.mangled for k in ordered])):
        k.name = short_name(name)

    launch_paths = [pathlib.Path(x) for x in (a.launches if a.launches is not None
                                              else [root / "bench" / "kernel_launches.tsv"])]
    largest = read_launches(launch_paths)
    if a.write_launches:
        write_launches(pathlib.Path(a.write_launches), largest)
    by_name = collections.defaultdict(int)
    for name, threads in largest.items():
        by_name[without_parameters(name)] = max(by_name[without_parameters(name)], threads)
    for k in ordered:
        k.block = largest.get(k.name) or by_name.get(without_parameters(k.name))

    allowed_used = set()
    for k in ordered:
        block = k.block or WORST_CASE_BLOCK
        if k.registers * block > REGISTERS_PER_SM:
            known = f"launched with {block} threads" if k.block else f"no launch logged: assumed {block} threads"
            k.problems.append(f"{k.registers} registers x {block} threads = {k.registers * block} > "
                              f"{REGISTERS_PER_SM} ({known})")
        if k.smem > STATIC_SHARED_LIMIT:
            k.problems.append(f"{k.smem} bytes of static shared memory > {STATIC_SHARED_LIMIT}")
        if k.spill_stores or k.spill_loads:
            reason = None
            if k.source.startswith("tests/"):
                reason = "a test kernel"
            for prefix, why in ALLOWED_SPILLS.items():
                if k.name.startswith(prefix):
                    reason = why
                    allowed_used.add(prefix)
            if reason is None:
                k.problems.append(f"spills {k.spill_stores} bytes stored / {k.spill_loads} loaded on the training path")
            else:
                k.allowed = reason
    stale = sorted(set(ALLOWED_SPILLS) - allowed_used)

    worst = max(ordered, key=lambda k: k.registers * (k.block or WORST_CASE_BLOCK))
    spilling = [k for k in ordered if k.spill_stores or k.spill_loads]
    unlogged = [k for k in ordered if not k.block]
    failed = [k for k in ordered if k.problems]
    out = [
        "# Kernel resources",
        "",
        f"Generated by `python3 scripts/kernel_resources.py` from ptxas's report of the {a.arch} build "
        "(`-Xptxas=-v`, kept per object as `<object>.ptxas.log`) and the largest block each kernel is "
        "launched with (`bench/kernel_launches.tsv`, from `CTSR_EXECUTOR_LAUNCH_LOG` runs of the test suite; "
        f"a kernel never logged is taken at {WORST_CASE_BLOCK} threads, marked `*`). CI regenerates it and fails on: "
        f"registers x block > {REGISTERS_PER_SM}, static shared memory > {STATIC_SHARED_LIMIT} bytes, or a spill "
        "outside the allowed list in the script.",
        "",
        f"- {len(ordered)} kernels in {len(logs)} objects; largest registers x block: "
        f"{worst.registers * (worst.block or WORST_CASE_BLOCK)} (`{without_parameters(worst.name)}`, "
        f"{worst.registers} registers x {worst.block or WORST_CASE_BLOCK} threads)",
        f"- spilling: {len(spilling)}" + "".join(
            f"; `{without_parameters(k.name)}` {k.spill_stores}/{k.spill_loads} B "
            f"({getattr(k, 'allowed', 'NOT allowed')})" for k in spilling),
        f"- never launched in a logged run (block assumed {WORST_CASE_BLOCK}): {len(unlogged)}",
        f"- failures: {len(failed)}",
        "",
        "| family | kernel | registers | block | registers x block | static smem (B) | stack (B) | spill st/ld (B) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for k in ordered:
        block = k.block or WORST_CASE_BLOCK
        mark = "" if k.block else "*"
        flag = " **FAIL**" if k.problems else ""
        out.append(f"| {k.source} | `{without_parameters(k.name)}` | {k.registers} | {block}{mark} | "
                   f"{k.registers * block}{flag} | {k.smem} | {k.stack} | {k.spill_stores}/{k.spill_loads} |")
    text = "\n".join(out) + "\n"
    if a.out != "-":
        pathlib.Path(a.out).write_text(text)
    print(f"kernel_resources: {len(ordered)} kernels ({a.arch}); largest registers x block "
          f"{worst.registers * (worst.block or WORST_CASE_BLOCK)} ({without_parameters(worst.name)}); "
          f"{len(spilling)} spilling; {len(unlogged)} without a logged launch; {len(failed)} failing")
    for k in failed:
        for problem in k.problems:
            print(f"kernel_resources: FAIL {k.source}: {k.name}: {problem}", file=sys.stderr)
    for prefix in stale:
        print(f"kernel_resources: ALLOWED_SPILLS names '{prefix}', which no longer spills: remove it",
              file=sys.stderr)
    return 1 if failed or stale else 0


if __name__ == "__main__":
    sys.exit(main())
