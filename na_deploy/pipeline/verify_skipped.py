"""The pipeline's verify stage where its target has no backend to compare with (on loihi2: Lava not installed).

Nothing is called bit-exact that was not compared (docs/contract.md C6): report.json's "verify" section keeps its
keys with `samples` 0 (none compared), `bit_exact` None, and says why in `skipped`. The reference's trace of the
samples verify would have compared is stored as a golden file (`na_deploy.verify.golden`, GOLDEN_FILE in the run
folder), so a machine with the backend can check it later: `na-deploy verify OUT/net.nad.h5 --samples N
--timesteps T --golden OUT/verify.golden.npz` (the golden file holds its own inputs too).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from na_deploy.errors import NaDeployError
from na_deploy.ir import IntNet
from na_deploy.protocols import Backend, Target

GOLDEN_FILE = "verify.golden.npz"


def backend_or_reason(target: Target, net: IntNet,
                      backend: Optional[Backend]) -> tuple[Optional[Backend], Optional[str]]:
    """(the backend given, or the target's for `net`, None) or (None, why not) when the target refuses to make
    one here (a NaDeployError, e.g. "Lava is not installed: ..."): the pipeline then exports nothing and compares
    nothing, and says so."""
    if backend is not None:
        return backend, None
    try:
        return target.backend(net=net), None
    except NaDeployError as e:
        return None, str(e)


def verify_skipped(cfg: Any, x_test: np.ndarray, net: IntNet, target: Target, run_dir: Path, reason: str,
                   log: Callable[[str], None]) -> dict:
    """report.json's "verify" section when nothing could be compared: {samples: 0, timesteps, bit_exact: None,
    mismatches: None, layers: [], skipped: reason, golden: {file, samples, timesteps, command}} (no `golden`
    with --verify-samples 0)."""
    from na_deploy.verify.golden import write_golden

    n, T = int(cfg.verify_samples), int(cfg.verify_timesteps)
    section: dict = {"samples": 0, "timesteps": T, "bit_exact": None, "mismatches": None, "layers": [],
                     "skipped": reason}
    log(f"[export] skipped: {reason}")
    if n == 0:
        log("[verify] skipped, nothing compared (--verify-samples 0)")
        return section
    x = x_test[:n]
    write_golden(run_dir / GOLDEN_FILE, net, x, target.reference_simulate(net, x, T), np.arange(n), T,
                 meta={"written_by": "na-deploy pipeline: verify skipped", "reason": reason})
    data = f" --data {cfg.data}" if cfg.data else ""
    command = f"na-deploy verify net.nad.h5{data} --samples {n} --timesteps {T} --golden {GOLDEN_FILE}"
    section["golden"] = {"file": GOLDEN_FILE, "samples": n, "timesteps": T, "command": command}
    log(f"[verify] skipped, nothing compared; the reference's trace of {n} samples at T={T} is in {GOLDEN_FILE}: "
        f"check it where the backend is installed, in the run folder: `{command}`")
    return section


def skipped_summary(verify: dict) -> str:
    """The summary table's verify line for a skipped check."""
    golden = verify.get("golden")
    where = f"; reference trace of {golden['samples']} samples in {golden['file']}" if golden else ""
    return f"verify: SKIPPED, nothing compared ({verify['skipped'].split(':')[0]}){where}"


def skipped_md(verify: dict) -> list[str]:
    """report.md's verify section for a skipped check."""
    out = ["## Verify: skipped", "", f"Nothing was compared with the backend: {verify['skipped']}.", ""]
    golden = verify.get("golden")
    if golden:
        out += [f"The reference's trace of {golden['samples']} samples at T={golden['timesteps']} is in "
                f"{golden['file']}; check it where the backend is installed: `{golden['command']}`.", ""]
    return out
