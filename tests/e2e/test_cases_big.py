"""shared/cases 9: a 1 GiB upload (`aws s3 cp`: multipart, 8 MiB parts, aws-chunked with CRC32
trailers, 10 at a time) and download (`aws s3api get-object`: one streamed answer) through the
gateway, with the daemon's memory sampled from /proc while the bytes flow (the 3 GB run is the
benchmark's).

The figures (seconds, MiB/s, daemon VmRSS before / peak during / after, VmHWM, moto's VmRSS)
are printed on stdout (`-s` shows them) and written to records.dir/../big-transfer.json.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import pytest

import harness
from harness import Agents, Daemon, Moto, World

pytestmark = [pytest.mark.usefixtures("daemon_log"), pytest.mark.slow]

BUCKET = "e2e-cases-big"
SIZE = 1 << 30
BLOCK = 1 << 20
#: The gateway streams: its resident memory may grow by this much at most while 1 GiB passes
#: (buffers of a few connections, TLS records, the recording's capped prefix), never by a
#: part or the object.
MAX_RSS_GROWTH_MIB = 128
TRANSFER_TIMEOUT = 900.0
#: records.body_cap_bytes is 64 KiB per body (the default): a recorded exchange, bodies in JSON
#: and base64, stays well under this.
MAX_RECORDED_LINE_BYTES = 512 * 1024


def status_kib(pid: int, field: str) -> int:
    """A `kB` field of /proc/<pid>/status (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


class RssSampler:
    """Samples VmRSS of a process every `interval` seconds in a thread; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid, self.interval = pid, interval
        self.peak_kib = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak_kib = max(self.peak_kib, status_kib(self.pid, "VmRSS"))
                self.samples += 1
            except (OSError, KeyError):
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def write_pattern(path: Path) -> str:
    """A 1 GiB file of distinct 1 MiB blocks (each stamped with its index, so a reordered or
    repeated block changes the digest); returns its sha256."""
    digest = hashlib.sha256()
    base = bytes(range(256)) * (BLOCK // 256)
    with path.open("wb") as out:
        for index in range(SIZE // BLOCK):
            block = index.to_bytes(8, "big") + base[8:]
            digest.update(block)
            out.write(block)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(BLOCK * 8):
            digest.update(chunk)
    return digest.hexdigest()


def mib(kib: int) -> float:
    return round(kib / 1024, 1)


def test_case9_one_gib_up_and_down_with_flat_gateway_memory(
        agents: Agents, alice_token_file: Path, daemon: Daemon, moto: Moto, world: World,
        tmp_path: Path):
    assert daemon.process is not None
    pid = daemon.process.pid
    source, back = tmp_path / "big.bin", tmp_path / "big-back.bin"
    expected = write_pattern(source)
    made = agents.batch(alice_token_file, [["aws", "s3api", "create-bucket", "--bucket", BUCKET]])
    assert made[0]["rc"] == 0, made
    before_kib = status_kib(pid, "VmRSS")
    recordings = world.records / harness.RECORDINGS_DIR_NAME
    old_recordings = set(recordings.glob("*.jsonl"))

    with RssSampler(pid) as up_rss:
        [up] = agents.batch(alice_token_file, [
            ["aws", "s3", "cp", "--only-show-errors", str(source), f"s3://{BUCKET}/big.bin"]],
            timeout=TRANSFER_TIMEOUT)
    middle_kib = status_kib(pid, "VmRSS")
    with RssSampler(pid) as down_rss:
        # One GET, one 1 GiB answer streamed through. (`aws s3 cp` downloads in 8 MiB ranges,
        # and moto 5.2.5 reads the whole object for each range: 125 s for 1 GiB with or
        # without the gateway, all of it moto's.)
        [down] = agents.batch(alice_token_file, [
            ["aws", "s3api", "get-object", "--bucket", BUCKET, "--key", "big.bin", str(back)]],
            timeout=TRANSFER_TIMEOUT)
    after_kib, hwm_kib = status_kib(pid, "VmRSS"), status_kib(pid, "VmHWM")

    figures = {
        "bytes": SIZE,
        "upload_seconds": round(up["seconds"], 1),
        "upload_mib_s": round(SIZE / BLOCK / up["seconds"], 1),
        "download_seconds": round(down["seconds"], 1),
        "download_mib_s": round(SIZE / BLOCK / down["seconds"], 1),
        "daemon_rss_before_mib": mib(before_kib),
        "daemon_rss_peak_upload_mib": mib(up_rss.peak_kib),
        "daemon_rss_after_upload_mib": mib(middle_kib),
        "daemon_rss_peak_download_mib": mib(down_rss.peak_kib),
        "daemon_rss_after_mib": mib(after_kib),
        "daemon_vmhwm_mib": mib(hwm_kib),
        "rss_samples": up_rss.samples + down_rss.samples,
        "moto_rss_mib": mib(status_kib(moto.process.pid, "VmRSS")),
    }
    print("\ncase 9 (1 GiB through the gateway):", json.dumps(figures))
    (world.tmp / "big-transfer.json").write_text(json.dumps(figures, indent=1) + "\n")

    assert up["rc"] == 0, up
    assert down["rc"] == 0, down
    assert back.stat().st_size == SIZE
    assert sha256_of(back) == expected
    peak = max(up_rss.peak_kib, down_rss.peak_kib)
    assert mib(peak - before_kib) < MAX_RSS_GROWTH_MIB, figures
    # Recordings keep a bounded prefix of each body: no exchange line holds a part or the object.
    longest = max(len(line) for path in set(recordings.glob("*.jsonl")) - old_recordings
                  for line in path.read_bytes().splitlines())
    assert longest < MAX_RECORDED_LINE_BYTES, longest
