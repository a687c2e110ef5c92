"""Evaluation: the paper's 8 zero-shot benchmarks (OLMES), validation loss / perplexity / bits per byte,
and parameter / FFN-FLOP accounting (Tables 1 and 2)."""
from .lm_metrics import validation_metrics
from .scoring import Score, evaluate_tasks, score_requests
from .tasks import TASK_LABELS, TASKS, available_tasks, load_task

__all__ = ["TASKS", "TASK_LABELS", "evaluate_tasks", "validation_metrics", "score_requests", "Score", "load_task",
           "available_tasks"]
