"""The fine-tuning runner: fine-tune a pretrained model on a labelled dataset, for real.

Data (:func:`load_task`): an image folder (``root/<class>/<image>``), a CSV of image paths
and labels (a ``path`` column; relative paths are read from the CSV's folder), or a CSV
of texts and labels (``text``, ``label``). A seeded, stratified train / validation split
is drawn once per (data, seed).

Models: any spec the extraction adapters load (:mod:`features.extract`: TorchScript,
torch modules, timm, Hugging Face, sentence models). The adapter gives the features the
old classifier saw; a new linear head is put on top. ``mode="full"`` trains backbone and
head together (AdamW); ``mode="linear"`` (a linear probe) computes the frozen features
once and trains the head only. Validation accuracy is measured after every epoch;
training stops early after ``patience`` epochs without improvement and the best epoch's
weights are kept. On CUDA the forward passes run in mixed precision (bfloat16 autocast).

Every trial is a job in the history store, written in two atomic steps: inserted as
``running`` (with host and process id) before training, then updated to ``completed``
(value = best validation accuracy, learning curve, duration, weights path) or ``failed``
(with the error). A process killed with ``kill -9`` leaves a ``running`` job behind; the
next run marks it ``failed`` (its process is gone) and redoes the trial, and trials that
already completed with the same model, data and hyper-parameters are reused, not re-run.
Each trial is also an MLflow run (experiment ``recommender-finetune``; with the local
executor it is created, RUNNING, when the trial starts, and a run left RUNNING by a killed
process is ended as FAILED by the next call on that dataset), and its weights
are saved under ``<home>/finetuned/<dataset>/<model>/<trial>/`` as ``weights.npz``
(state dict arrays, no pickle) next to ``trial.json``.
"""
from .config import MODES, FineTuneError, TrialConfig, TrialResult, make_grid, trial_key
from .data import TaskData, load_task, split_indices
from .runner import (PID_DIR_ENV, SOURCE, PendingTrial, best_of, fail_stale, finetune_model, finish_trial,
                     prepare_trial, run_trial, run_trials, train_trial, wait_background)
from .tracking import EXPERIMENT, completed_trials, process_alive, warm_tracking
from .train import SLOW_ENV, save_weights, train_classifier, weights_dir

__all__ = [
    "EXPERIMENT", "MODES", "PID_DIR_ENV", "SLOW_ENV", "SOURCE", "FineTuneError", "PendingTrial", "TaskData",
    "TrialConfig", "TrialResult", "best_of", "completed_trials", "fail_stale", "finetune_model", "finish_trial",
    "load_task", "make_grid", "prepare_trial", "process_alive", "run_trial", "run_trials", "save_weights",
    "split_indices", "train_classifier", "train_trial", "trial_key", "wait_background", "warm_tracking",
    "weights_dir",
]
