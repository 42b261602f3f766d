"""Evaluation: classification metrics and their statistics, in plain numpy / scipy.

``dermnet.evaluation.metrics`` owns the point estimates (confusion matrix, ISIC 2018 balanced
accuracy, per-class sensitivity / specificity / PPV / NPV / F1, rank-based AUC, binary and
pairwise metrics); ``dermnet.evaluation.stats`` owns their uncertainty (Clopper-Pearson,
DeLong, cluster bootstrap over lesions), model comparisons (DeLong test, McNemar,
Mann-Whitney) and the full ``metrics.json`` report. Neither imports Keras or TensorFlow, so
a run can be scored from its ``predictions.csv`` alone.
"""
