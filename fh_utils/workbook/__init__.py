"""What the numbered notebooks call: training steps, evaluation, notebook 05's prediction, comparison, EDA, plots."""
