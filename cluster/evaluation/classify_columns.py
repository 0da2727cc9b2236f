"""The classification task's pipeline columns (cluster/evaluation/classify.py, classify_model.py).

Besides ``row`` and the task seam's ``_bad``/``_batch`` (cluster/evaluation/task.py): the input
columns as the data spec names them, then the task's own ``_`` columns between stages.
"""

TEXT, IMAGE, LABEL, ID, SLICE, PROBS = "text", "image", "label", "id", "slice", "probs"
ENC = "_enc:"  # + a tokenizer output key (input_ids, attention_mask, ...): list<int32> per row
PIXELS = "_pixels"  # decoded uint8 (3, S, S) image, as fixed-size binary (null for a bad row)
PERTURBED = "_probs@"  # + a perturbation kind: the perturbed text's probabilities
EMBEDDING = "_embedding"  # mean-pooled embedding of a hash-sampled row (drift), else null
TOKENS = "_tokens"  # token attributions (JSON) of a row that may be one of the most confident mistakes
EMBED = "_embed"  # drift: whether the model stage embeds the row (a hash sample of the rows)
NTOK, NUNK = "_ntok", "_nunk"  # tokens and [UNK] tokens of a text (drift), untruncated
