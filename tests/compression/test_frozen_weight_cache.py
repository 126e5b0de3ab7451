"""Compiled graphs with oneDNN-prepacked frozen weights come from Inductor's FX graph cache
(compression.frozen_weight_cache), and a graph taken from the cache computes with the current model's weights."""

from tests import probes


def test_prepacked_graphs_are_cached_and_computed_with_the_current_weights():
    # The probe runs in a fresh process with its own Inductor cache, started when this file is collected.
    results = probes.figures("frozen_weight_cache")
    first, other_weights = results["fp32_seed0"], results["fp32_seed1"]
    # Without the metadata key each compile bypasses the cache ("mkldnn tensors unpickleable").
    assert (first["fxgraph_cache_miss"], first["fxgraph_cache_bypass"]) == (1, 0)
    assert (other_weights["fxgraph_cache_hit"], other_weights["fxgraph_cache_bypass"]) == (1, 0)
    # The hit ran the second model's weights, not the first's: its outputs are its own eager ones.
    assert other_weights["output"] != first["output"]
    assert other_weights["max_abs_error"] < 1e-4 and first["max_abs_error"] < 1e-4
    assert results["int8_first"]["fxgraph_cache_miss"] == 1 and results["int8_first"]["fxgraph_cache_bypass"] == 0
    assert results["int8_again"]["fxgraph_cache_hit"] == 1
    assert results["int8_again"]["max_abs_error"] < 1e-3
