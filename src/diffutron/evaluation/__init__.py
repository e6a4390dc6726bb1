"""Evaluation: ELBO perplexity, Monte-Carlo likelihood of a continuation, the CETVEL tasks, reports.

    from diffutron.evaluation import EvalConfig, evaluate, resolve_tasks
    results = evaluate(load_checkpoint("model/"), resolve_tasks("diffutron"), EvalConfig(limit=100))

| module         | what                                                                         |
|----------------|------------------------------------------------------------------------------|
| likelihood.py  | stratified MC ELBO of (context, continuation), exact token alignment, batching |
| perplexity.py  | ELBO perplexity of text with bits per byte / character                       |
| sequential.py  | exact chain-rule NLL: an MDLM unmasked in order; an autoregressive model     |
| tasks.py       | the task registry (prompt, choices, metrics, split, data location) as data  |
| sources.py     | hub datasets, original release files in ``--data-dir``, packages; bad rows reported |
| metrics.py     | acc, acc_norm, F1, macro-F1, SQuAD exact / F1, ROUGE, standard errors        |
| runner.py      | ``evaluate``: tasks on a checkpoint -> results                                |
| report.py      | markdown table and bar chart next to the published Diffutron numbers         |
| genquality.py  | generative perplexity and unigram entropy of samples                         |
| harness.py     | ``diffutron`` as an lm-eval model (needs ``lm-eval``; imported only on demand) |
"""

from .likelihood import ContinuationScorer, EncodedPair, LikelihoodConfig, LikelihoodResult, encode_pair
from .metrics import Metric
from .perplexity import TextPerplexity, text_perplexity
from .runner import EvalConfig, EvalResults, Evaluator, TaskResult, evaluate
from .sources import Problem, TaskData, load_task_data
from .tasks import GROUPS, TASKS, BadItem, HubSource, Rendered, Task, get_task, render, resolve_tasks

__all__ = [
    "ContinuationScorer",
    "EncodedPair",
    "LikelihoodConfig",
    "LikelihoodResult",
    "encode_pair",
    "Metric",
    "TextPerplexity",
    "text_perplexity",
    "EvalConfig",
    "EvalResults",
    "Evaluator",
    "TaskResult",
    "evaluate",
    "Problem",
    "TaskData",
    "load_task_data",
    "GROUPS",
    "TASKS",
    "BadItem",
    "HubSource",
    "Rendered",
    "Task",
    "get_task",
    "render",
    "resolve_tasks",
]
