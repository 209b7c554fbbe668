"""What the CPU at hand runs natively, for choices that must not be hard-coded (bf16 is ~2x faster
than fp32 where the CPU has bf16 instructions and 40-100x slower where oneDNN emulates them), and the
calling thread's priority."""

import os
import sys
import threading
from pathlib import Path

BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpuinfo(field: str) -> str:
    """The first `field` line of /proc/cpuinfo ("" where there is none, e.g. off Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    for line in text.splitlines():
        if line.split(":", 1)[0].strip() == field:
            return line.split(":", 1)[1].strip()
    return ""


def cpu_flags() -> set[str]:
    """The feature flags of /proc/cpuinfo (empty where there is none, e.g. off Linux)."""
    return set(cpuinfo("flags").split())


def cpu_name() -> str:
    """The CPU's model name, e.g. "AMD EPYC 9B14" ("unknown CPU" where /proc/cpuinfo has none)."""
    return cpuinfo("model name") or "unknown CPU"


def native_bf16(flags: set[str] | None = None) -> tuple[bool, str]:
    """(whether this CPU computes bf16 natively, why). `P2P_NATIVE_BF16=1` / `0` overrides the
    detection, for CPUs whose flags don't tell."""
    forced = os.environ.get("P2P_NATIVE_BF16")
    if forced in ("0", "1"):
        return forced == "1", f"P2P_NATIVE_BF16={forced}"
    found = sorted((cpu_flags() if flags is None else flags) & set(BF16_FLAGS))
    if found:
        return True, f"the CPU has {', '.join(found)}"
    return False, f"the CPU has none of {', '.join(BF16_FLAGS)} (bf16 would be emulated, far slower than fp32)"


def thread_niceness() -> int:
    """The calling OS thread's nice value. On Linux each thread has its own, and the threads it starts
    (OpenMP's team, an ONNX Runtime session's pool) inherit it; elsewhere 0."""
    if not sys.platform.startswith("linux"):
        return 0
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def lower_thread_priority(niceness: int = 19) -> None:
    """Give the calling OS thread, and the threads it starts from now on, the nice value `niceness`:
    under contention they get the CPU only after every thread of normal priority. One-way for an
    unprivileged process (a nice value can be raised, not lowered), so meant for a thread that is
    kept for low-priority work. A no-op off Linux, where niceness belongs to the process."""
    if sys.platform.startswith("linux"):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
