"""Metrics, statistics, figures and reports: functions of the results store only."""
