"""Statistical diagnostics through ArviZ."""

from ppl_dgm.diagnostics.arviz import pointwise_log_likelihood, posterior_predictive, to_inference_data

__all__ = ["pointwise_log_likelihood", "posterior_predictive", "to_inference_data"]
