"""Statistics: the metric table, mergeable sufficient statistics and their exact merge, bootstrap
confidence intervals, paired comparisons, gates, slices, robustness and drift checks."""
