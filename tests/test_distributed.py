"""Training under DDP: two CPU processes (gloo) give the model one process gives with the same global batch."""

import os
import subprocess
import sys

import pytest
import torch

from speechtl.models import load_model

CONFIG = """method: full
learning_rate: 3.0e-3
lr_scheduler: constant
warmup_steps: 0
max_steps: 4
batch_size: {batch_size}
eval_every: 0
save_every: 2
log_every: 1
seed: 3
"""


def run_train(tiny_whisper, manifest, out, batch_size, processes):
    conf = out.parent / f"{out.name}.yaml"
    conf.write_text(CONFIG.format(batch_size=batch_size))
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] \
        if processes > 1 else [sys.executable]
    cmd = [*launcher, "-m", "speechtl.cli", "train", "--model", str(tiny_whisper), "--train", str(manifest),
           "--config", str(conf), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    return res


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(tiny_whisper, toy_manifest, tmp_path):
    run_train(tiny_whisper, toy_manifest, tmp_path / "one", batch_size=4, processes=1)
    run_train(tiny_whisper, toy_manifest, tmp_path / "two", batch_size=2, processes=2)
    env = (tmp_path / "two" / "env.json").read_text()
    assert '"num_processes": 2' in env
    log = (tmp_path / "two" / "train.log").read_text()
    assert "2 utterance(s) per micro-batch x 2 process(es)" in log
    base = load_model(str(tiny_whisper)).module.state_dict()
    one, two = (load_model(str(tmp_path / d)).module.state_dict() for d in ("one", "two"))
    moved = [k for k in base if not torch.equal(base[k], one[k])]
    assert len(moved) > 10
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=1e-5, msg=k)
