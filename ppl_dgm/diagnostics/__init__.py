"""Statistical diagnostics: ArviZ InferenceData for any story, PSIS k-hat of guides, simulation-based
calibration, and model comparison on held-out data."""

from ppl_dgm.diagnostics.arviz import pointwise_log_likelihood, to_inference_data
from ppl_dgm.diagnostics.compare import ComparisonTable, compare
from ppl_dgm.diagnostics.predictive import posterior_predictive
from ppl_dgm.diagnostics.psis import PSISDiagnostic, psis_diagnostic
from ppl_dgm.diagnostics.report import LooComparison, compare_loo
from ppl_dgm.diagnostics.sbc import SBCResult, nuts_engine, sbc, svi_engine

__all__ = ["ComparisonTable", "LooComparison", "PSISDiagnostic", "SBCResult", "compare", "compare_loo", "nuts_engine",
           "pointwise_log_likelihood", "posterior_predictive", "psis_diagnostic", "sbc", "svi_engine",
           "to_inference_data"]
