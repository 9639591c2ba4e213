import pytest
from project_conf import section

from ica_captioning.params import ParameterError
from ica_captioning.pipelines.evaluation import nodes as ev


def test_gpu_environment_changes_single_keys():
    base, gpu = section("evaluation"), section("evaluation", "gpu")
    assert gpu["device"] == "cuda"
    changed = {k for k in base if base[k] != gpu[k]}
    assert changed == {"device", "batch_size", "beam_size", "progress"}


def test_nodes_reject_unknown_and_missing_keys_by_full_name():
    with pytest.raises(ParameterError, match=r"evaluation\.figures\.seeed: unknown key"):
        ev.make_run_id(section("evaluation", figures={"seeed": 1}))
    partial = section("evaluation")
    del partial["grounding"]["mass"]
    with pytest.raises(ParameterError, match=r"evaluation\.grounding\.mass: missing"):
        ev.make_run_id(partial)
