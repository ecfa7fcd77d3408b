"""The filter stage end to end, through the real CLI: local processes, MPI ranks, resume, accounting."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stage_helpers import BIN, REPO, cli, manifest, output_files

TASKS = "executor.tasks=4"


@pytest.fixture(scope="module")
def pywb_local(pywb_warcs, tmp_path_factory):
    out = tmp_path_factory.mktemp("pywb") / "local"
    proc = cli("stage=filter", f"input.paths=[{pywb_warcs}]", "input.format=warc", "filters=fineweb",
               "executor=local", TASKS, f"output.dir={out}")
    return out, proc


def test_pywb_manifest_balances_and_report_prints_it(pywb_local):
    out, proc = pywb_local
    m = manifest(out)
    assert m["balanced"] and m["documents_in"] == 421 and m["tasks"] == 4
    assert m["documents_in"] == m["kept"]["documents"] + m["removed_total"] + m["errors_total"]
    assert m["errors"] == {"reader": {"corrupt_record": 1}}
    assert m["removed"]["reader"]["not_http_response"] == 352
    assert list(m["removed"])[1:] == ["00_url", "01_language", "02_gopher_repetition", "03_gopher_quality",
                                      "04_c4_quality", "05_fineweb_quality"]
    assert m["kept"]["documents"] >= 1
    assert "in = kept + removed + errors: 421 = " in proc.stdout and "(holds)" in proc.stdout
    report = cli("report", str(out)).stdout
    assert "03_gopher_quality" in report and "corrupt_record" in report
    kept = output_files(out)
    # one file per task that kept something
    assert {k for k in kept if k.startswith("documents/")} <= {f"documents/{r:05d}.jsonl.zst" for r in range(4)}
    # removed documents are kept aside with their reason
    import zstandard

    removed = zstandard.ZstdDecompressor().decompressobj().decompress(
        next(v for k, v in kept.items() if k.startswith("removed/03_gopher_quality"))).decode().splitlines()
    assert json.loads(removed[0])["metadata"]["filter_reason"].startswith("gopher")


def test_mpi_ranks_give_identical_output(chardet_pages, chardet_local, tmp_path):
    out = tmp_path / "mpi"
    cli(f"input.paths=[{chardet_pages}]", "input.format=pages", "filters=fineweb", "executor=mpi", TASKS,
        f"output.dir={out}", launcher=[str(BIN / "mpiexec"), "-n", "4"])
    assert output_files(out) == output_files(chardet_local)
    assert manifest(out) | {"output_dir": ""} == manifest(chardet_local) | {"output_dir": ""}


def test_chardet_manifest(chardet_local):
    m = manifest(chardet_local)
    assert m["balanced"] and m["documents_in"] == 426
    assert m["errors"]["reader"] == {"binary_payload": 1}
    assert m["removed"]["01_language"]["language_not_wanted"] > 100  # a multilingual corpus, English wanted


def test_killed_stage_resumes_to_identical_output(chardet_pages, chardet_local, tmp_path):
    out = tmp_path / "resumed"
    args = [sys.executable, "-m", "data_pipeline", f"input.paths=[{chardet_pages}]", "input.format=pages",
            "filters=fineweb", TASKS, "executor.workers=1", f"output.dir={out}", "progress=false"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    completions = out / "logs" / "completions"
    deadline = time.monotonic() + 240
    while not (completions.exists() and len(list(completions.iterdir())) >= 1):
        assert proc.poll() is None, "the stage ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(completions.iterdir()))
    assert 1 <= done < 4 and not (out / "manifest.json").exists()
    # a half-done stage refuses another task count, with a message that says what to do
    refused = cli(f"input.paths=[{chardet_pages}]", "input.format=pages", "filters=fineweb", "executor.tasks=8",
                  f"output.dir={out}", check=False)
    assert refused.returncode != 0
    assert "executor.tasks=4" in refused.stderr and "cannot change half way" in refused.stderr
    cli(f"input.paths=[{chardet_pages}]", "input.format=pages", "filters=fineweb", TASKS, f"output.dir={out}")
    assert output_files(out) == output_files(chardet_local)
    assert manifest(out)["balanced"]


@pytest.mark.parametrize("args, message", [
    (["input.format=csv"], "expected one of [warc, wet, pages, jsonl, parquet, hf, mediawiki]"),
    (["output.dir=null"], "output.dir: not set. Fix: pass output.dir=DIR"),
    (["filters=none", "+filters.0.kind=nope"], None),
    (["executor=slurm"], "executor.partition"),
    (["input.bogus=1"], "Key 'bogus' not in 'InputConfig'"),
])
def test_bad_config_fails_before_any_work(pywb_warcs, tmp_path, args, message):
    out = tmp_path / "out"
    base = [f"input.paths=[{pywb_warcs}]", f"output.dir={out}"]
    proc = cli(*base, *args, check=False)
    assert proc.returncode != 0
    if message:
        assert message in proc.stderr
    assert not (out / "documents").exists()


def test_multirun_sweeps_filter_presets(pywb_warcs, tmp_path):
    proc = cli("--multirun", f"input.paths=[{pywb_warcs}/iana.warc.gz]", "filters=gopher,none",
               f"output.dir={tmp_path}/" + "${hydra:runtime.choices.filters}", f"hydra.sweep.dir={tmp_path}/sweep")
    gopher, none = manifest(tmp_path / "gopher"), manifest(tmp_path / "none")
    assert gopher["documents_in"] == none["documents_in"] == 343
    assert none["kept"]["documents"] == 16 and gopher["kept"]["documents"] < 16
    assert proc.stdout.count("(holds)") == 2
