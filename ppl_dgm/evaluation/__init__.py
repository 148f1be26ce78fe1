"""Trace-based evaluation: exact, importance-weighted and dequantized log-likelihoods."""

from ppl_dgm.evaluation.likelihood import LogLikelihood, bits_per_dim, log_likelihood
from ppl_dgm.traces import LogWeights, log_importance_weights

__all__ = ["LogLikelihood", "LogWeights", "bits_per_dim", "log_importance_weights", "log_likelihood"]
