"""Vault throughput and memory, against OpenSSL measured in the same run.

    .venv/bin/python bench/vault.py [--size-mib 1024] [--repeat 3] [--dir /dev/shm]

For 1 GiB by default, medians of --repeat rounds, each round measuring:
- `openssl speed -evp aes-256-gcm` at 16 KiB blocks (the reference);
- the library (`securex.vault.stream`) encrypting and decrypting from memory to a null
  sink, in a fresh process;
- `securex vault encrypt` / `decrypt`, file to file, as new processes (so Python start,
  imports, database and key loading are included), with each one's peak RSS; the same
  commands on an empty file (their fixed cost); and `cp` of the same file (what the
  kernel alone takes to write that much).
Every figure is printed with its ratio to OpenSSL and the issue's target.

Files go to --dir (a tmpfs by default when /dev/shm exists) so that the figures measure
securex and the kernel rather than a disk; pass --dir on a disk to include it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SECUREX = str(Path(sys.executable).with_name("securex"))
MIB = 1024 * 1024

LIBRARY_ROUND = """
import io, os, sys, time
from securex.vault.stream import decrypt_stream, encrypt_stream, new_header, read_header
size = int(sys.argv[1])
block = os.urandom(1 << 20)

class Source(io.RawIOBase):
    left = size
    def readable(self): return True
    def readinto(self, buf):
        view = memoryview(buf); n = min(len(view), self.left); done = 0
        while done < n:
            chunk = min(n - done, len(block)); view[done:done + chunk] = block[:chunk]
            done += chunk
        self.left -= n
        return n

class Null(io.RawIOBase):
    def writable(self): return True
    def write(self, data): return len(data)

class Keep(io.RawIOBase):
    def __init__(self, path): self.fh = open(path, "wb")
    def writable(self): return True
    def write(self, data): return self.fh.write(data)

dek = os.urandom(32)
header = new_header(key_id="tenant:40192", key_version=1)
start = time.perf_counter()
encrypt_stream(Source(), Null(), dek=dek, header=header, tenant="40192", object_id="bench")
enc = time.perf_counter() - start
path = sys.argv[2]
sink = Keep(path)  # the ciphertext to decrypt, made outside the timing
src = Source(); src.left = size
encrypt_stream(src, sink, dek=dek, header=header, tenant="40192", object_id="bench")
sink.fh.close()
data = io.BytesIO(open(path, "rb").read())
head = read_header(data)
start = time.perf_counter()
decrypt_stream(data, Null(), dek=dek, header=head, tenant="40192", object_id="bench")
dec = time.perf_counter() - start
os.unlink(path)
print(enc, dec)
"""


def openssl_bytes_per_second(seconds: int = 3) -> float:
    out = subprocess.run(
        ["openssl", "speed", "-seconds", str(seconds), "-bytes", "16384", "-evp", "aes-256-gcm"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(ln for ln in out.splitlines() if ln.upper().startswith("AES-256-GCM"))
    return float(re.findall(r"([\d.]+)k", line)[-1]) * 1000


# A small wrapper runs each command, so that the peak RSS read through wait4 is the
# command's own and not inherited from this (large) process at fork time.
WRAPPER = """
import os, sys, time
start = time.perf_counter()
pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ, file_actions=[
    (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
    (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0)])
_, status, usage = os.wait4(pid, 0)
print(time.perf_counter() - start, usage.ru_maxrss * 1024, os.waitstatus_to_exitcode(status))
"""


def timed(args: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Wall time and peak RSS (bytes) of one run of `args`."""
    out = subprocess.run(
        [sys.executable, "-c", WRAPPER, *args], env=env, check=True, capture_output=True, text=True
    ).stdout.split()
    if out[2] != "0":
        raise SystemExit(f"{' '.join(args)} failed with exit code {out[2]}")
    return float(out[0]), int(out[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    default_dir = "/dev/shm" if Path("/dev/shm").is_dir() else tempfile.gettempdir()
    parser.add_argument("--dir", default=default_dir)
    args = parser.parse_args()
    size = args.size_mib * MIB

    work = Path(tempfile.mkdtemp(prefix="securex-bench-", dir=args.dir))
    try:
        env = {**os.environ, "SECUREX_INSTANCE": str(work / "instance"), "SECUREX_DATABASE_URL": ""}
        subprocess.run([SECUREX, "init"], env=env, check=True, capture_output=True)
        subprocess.run(
            [SECUREX, "tenant", "add", "40192", "Mont-de-Marsan"],
            env=env,
            check=True,
            capture_output=True,
        )
        plain = work / "plain.bin"
        with open(plain, "wb") as fh:
            block = os.urandom(MIB)
            for _ in range(args.size_mib):
                fh.write(block)
        empty = work / "empty.bin"
        empty.write_bytes(b"")
        cp = shutil.which("cp") or "/bin/cp"

        rows: dict[str, list[float]] = {
            k: []
            for k in (
                "openssl",
                "lib_enc",
                "lib_dec",
                "cli_enc",
                "cli_dec",
                "fixed_enc",
                "fixed_dec",
                "cp",
            )
        }
        peaks: list[int] = []
        for i in range(args.repeat):
            rows["openssl"].append(openssl_bytes_per_second())
            out = subprocess.run(
                [sys.executable, "-c", LIBRARY_ROUND, str(size), str(work / "lib.sxv")],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.split()
            rows["lib_enc"].append(size / float(out[0]))
            rows["lib_dec"].append(size / float(out[1]))
            sealed, back = work / f"sealed{i}.sxv", work / f"back{i}.bin"
            t, peak = timed(
                [SECUREX, "vault", "encrypt", "--tenant", "40192", str(plain), str(sealed)], env
            )
            rows["cli_enc"].append(t)
            peaks.append(peak)
            t, peak = timed(
                [SECUREX, "vault", "decrypt", "--tenant", "40192", str(sealed), str(back)], env
            )
            rows["cli_dec"].append(t)
            peaks.append(peak)
            with back.open("rb") as fh:
                if back.stat().st_size != size or fh.read(MIB) != block:
                    raise SystemExit("round trip mismatch")
            sealed_empty = work / f"empty{i}.sxv"
            rows["fixed_enc"].append(
                timed(
                    [
                        SECUREX,
                        "vault",
                        "encrypt",
                        "--tenant",
                        "40192",
                        str(empty),
                        str(sealed_empty),
                    ],
                    env,
                )[0]
            )
            rows["fixed_dec"].append(
                timed(
                    [
                        SECUREX,
                        "vault",
                        "decrypt",
                        "--tenant",
                        "40192",
                        str(sealed_empty),
                        str(work / f"e{i}"),
                    ],
                    env,
                )[0]
            )
            copy = work / f"copy{i}.bin"
            rows["cp"].append(timed([cp, str(plain), str(copy)], env)[0])
            for path in (sealed, back, copy):
                path.unlink()

        med = {k: statistics.median(v) for k, v in rows.items()}
        ref = med["openssl"]

        def line(label: str, rate: float, target: float | None = None) -> None:
            ratio = rate / ref
            verdict = (
                ""
                if target is None
                else (f" (target {target}: {'met' if ratio >= target else 'NOT MET'})")
            )
            print(f"{label:<52} {rate / 1e9:6.2f} GB/s  ratio {ratio:4.2f}{verdict}")

        print(
            f"securex vault benchmark: {args.size_mib} MiB, median of {args.repeat}, files "
            f"in {args.dir}, {os.cpu_count()} cores"
        )
        line("openssl speed -evp aes-256-gcm, 16 KiB blocks", ref)
        line("library encrypt, memory to null sink", med["lib_enc"], 0.6)
        line("library decrypt, memory to null sink", med["lib_dec"], 0.6)
        line("securex vault encrypt, file to file, whole command", size / med["cli_enc"], 0.35)
        line("securex vault decrypt, file to file, whole command", size / med["cli_dec"], 0.35)
        line("  encrypt without its fixed cost", size / (med["cli_enc"] - med["fixed_enc"]))
        line("  decrypt without its fixed cost", size / (med["cli_dec"] - med["fixed_dec"]))
        line("cp of the same file (the kernel's floor)", size / med["cp"])
        print(
            f"{'fixed cost of a command (empty file): encrypt, decrypt':<52} "
            f"{med['fixed_enc']:.2f} s, {med['fixed_dec']:.2f} s"
        )
        peak = max(peaks)
        print(
            f"{'peak RSS of the commands':<52} {peak / MIB:6.1f} MiB  (target < 128 MiB: "
            f"{'met' if peak < 128 * MIB else 'NOT MET'})"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
