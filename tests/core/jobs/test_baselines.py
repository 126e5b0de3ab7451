from core.jobs.baselines import baseline_key, find_baseline, save_baseline
from tests.rows import ensure_tenant

EVALUATION = {"split": "val", "max_samples": None, "latency": True, "latency_batch_sizes": [1, 32], "compile": True}
VERSIONS = {"modelpress": "0.1.0", "torch": "2.13.0"}


def test_the_key_changes_with_every_input():
    key = baseline_key("m" * 64, "d" * 64, EVALUATION, VERSIONS)
    assert key == baseline_key("m" * 64, "d" * 64, dict(reversed(EVALUATION.items())), VERSIONS)
    changed = [baseline_key("n" * 64, "d" * 64, EVALUATION, VERSIONS),
               baseline_key("m" * 64, "e" * 64, EVALUATION, VERSIONS),
               baseline_key("m" * 64, "d" * 64, {**EVALUATION, "split": "test"}, VERSIONS),
               baseline_key("m" * 64, "d" * 64, {**EVALUATION, "max_samples": 100}, VERSIONS),
               baseline_key("m" * 64, "d" * 64, EVALUATION, {**VERSIONS, "torch": "2.14.0"})]
    assert key not in changed and len(set(changed)) == len(changed)


def test_a_baseline_is_kept_once_per_tenant_without_its_latency(backend):
    from core.db.session import session_scope
    measured = {"accuracy": 0.9, "samples": 360, "metric": "accuracy", "metric_points": 90.0, "size_bytes": 1000,
                "parameters": 50, "output_kind": "logits"}
    metrics = {**measured, "latency_ms": {"1": 0.5}, "latency_reliable": False}
    with session_scope() as session:
        ours, theirs = ensure_tenant(session, "baselines-ours"), ensure_tenant(session, "baselines-theirs")
        assert save_baseline(session, ours, "k" * 64, "m" * 64, "d" * 64, metrics)
        assert not save_baseline(session, ours, "k" * 64, "m" * 64, "d" * 64, {**metrics, "accuracy": 0.1})
        assert not save_baseline(session, ours, "j" * 64, "m" * 64, "d" * 64, {"size_bytes": 1})  # no metric
    with session_scope() as session:
        assert find_baseline(session, ours, "k" * 64) == measured
        assert find_baseline(session, theirs, "k" * 64) is None
        assert find_baseline(session, ours, "j" * 64) is None
