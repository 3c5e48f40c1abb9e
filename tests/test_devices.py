"""One GPU per job of a joblib sweep, without a GPU: which GPU a job takes as a function of
its number, the GPUs here and the jobs that run at once; the refusal of more parallel jobs
than GPUs is a row of tests/test_bad_input.py."""

from __future__ import annotations

import contextlib

import pytest
from omegaconf import OmegaConf

from ablate.errors import ConfigError
from ablate.devices import check_parallel_jobs, claimed_gpu, gpu_order, parallel_jobs

JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"


@pytest.mark.parametrize("job,gpus,order", [(0, 1, [0]), (0, 4, [0, 1, 2, 3]),
                                            (5, 4, [1, 2, 3, 0]), (7, 2, [1, 0])])
def test_a_job_tries_its_number_modulo_the_gpus_first(job, gpus, order):
    assert gpu_order(job, gpus) == order


@pytest.mark.parametrize("n_jobs,gpus,share,refused", [
    (2, 2, False, False), (1, 8, False, False), (3, 2, False, True), (3, 2, True, False),
    (4, 0, False, False)])  # no GPU: a CPU sweep, as many jobs as asked
def test_more_parallel_jobs_than_gpus_is_refused_unless_shared(n_jobs, gpus, share, refused):
    with pytest.raises(ConfigError, match=f"n_jobs={n_jobs}: more parallel jobs than the "
                       f"{gpus} GPU") if refused else contextlib.nullcontext():
        check_parallel_jobs(n_jobs, gpus, share)


def test_parallel_jobs_are_joblibs_n_jobs_and_one_for_other_launchers():
    from joblib import cpu_count

    assert parallel_jobs(OmegaConf.create({"_target_": JOBLIB, "n_jobs": 3})) == 3
    assert parallel_jobs(OmegaConf.create({"_target_": JOBLIB, "n_jobs": -1})) == cpu_count()
    assert parallel_jobs(OmegaConf.create({"_target_": "x.BasicLauncher"})) == 1


def test_jobs_running_at_once_hold_distinct_gpus(tmp_path):
    """Two GPUs, two jobs at a time: #0 and #1 start; #1 ends first, so #2 (whose own GPU
    #0 still holds) takes GPU 1, not a second job on GPU 0. With share_gpus no lock is held."""
    with claimed_gpu(0, 2, False, tmp_path) as first:
        with claimed_gpu(1, 2, False, tmp_path) as second:
            assert (first, second) == (0, 1)
        with claimed_gpu(2, 2, False, tmp_path) as third:
            assert third == 1
            with claimed_gpu(4, 2, True, tmp_path) as shared:
                assert shared == 0
    with claimed_gpu(2, 2, False, tmp_path) as alone:  # all free again: its own
        assert alone == 0
