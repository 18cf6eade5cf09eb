"""experiments: the evaluation engine, baselines, benchmarks and reports (``evaluate`` and
``report`` plug into the CLI through the ``recommender.commands`` entry points).

The public names below are imported on first use::

    from experiments import run_evaluation, register_baseline, load_history
"""
from history._lazy import lazy_exports

_EXPORTS = {
    # experiments.evaluate.evaluate (the module has the function's name, so it is exported as run_evaluation)
    "run_evaluation": "experiments.evaluate:evaluate", "EvaluationResult": "experiments.evaluate",
    "MethodSpec": "experiments.evaluate",
    "parse_feature_sets": "experiments.evaluate",
    "register_baseline": "experiments.baselines", "list_baselines": "experiments.baselines",
    "BASELINES": "experiments.baselines",
    "load_history": "experiments.histories", "load_pooled": "experiments.histories",
    "Benchmark": "experiments.benchmarks", "BENCHMARKS": "experiments.benchmarks",
    "register_evaluate": "experiments.cli", "register_report": "experiments.cli",
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
