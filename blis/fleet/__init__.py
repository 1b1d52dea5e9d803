"""The fleet's shape over time: prefill/decode disaggregation, node pools, instance lifecycle
(loading, warm-up, drain) and the autoscaler.

May import: blis.engine, blis.config, blis.request, blis.results. They act on the cluster only
through the interface it passes them.
"""
