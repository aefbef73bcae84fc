"""Workbook layer: what the numbered notebooks call, and the papermill runner behind ``make demo``.

Training steps (``workflow``), evaluation, submission, EDA tables and plots.
"""
