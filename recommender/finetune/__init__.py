"""The fine-tuning runner (see :mod:`recommender.finetune.runner`)."""
from .runner import (EXPERIMENT, MODES, PID_DIR_ENV, SLOW_ENV, SOURCE, FineTuneError, PendingTrial, TaskData,
                     TrialConfig, TrialResult, best_of, completed_trials, fail_stale, finetune_model, finish_trial,
                     load_task, make_grid, prepare_trial, process_alive, run_trial, run_trials, save_weights,
                     split_indices, train_classifier, train_trial, trial_key, wait_background, warm_tracking,
                     weights_dir)

__all__ = [
    "EXPERIMENT", "MODES", "PID_DIR_ENV", "SLOW_ENV", "SOURCE", "FineTuneError", "PendingTrial", "TaskData",
    "TrialConfig", "TrialResult", "best_of", "completed_trials", "fail_stale", "finetune_model", "finish_trial",
    "load_task", "make_grid", "prepare_trial", "process_alive", "run_trial", "run_trials", "save_weights",
    "split_indices", "train_classifier", "train_trial", "trial_key", "wait_background", "warm_tracking",
    "weights_dir",
]
