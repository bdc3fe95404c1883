"""The names of what a trial reports and is ranked by: defined once, here."""

ROUGE_METRICS = ("rouge1", "rouge2", "rougeL", "rougeLsum")  # mean F1 (0..1) of rouge_score, with stemming
EVAL_LOSS = "eval_loss"
METRIC_MODES = {**dict.fromkeys(ROUGE_METRICS, "max"), EVAL_LOSS: "min"}  # what ranks a trial, and which way

# How an example with several reference summaries is scored (`best --eval-file`).
BEST_REFERENCE = "best_reference"  # per example, the reference scoring highest (rouge_score's score_multi)
MEAN_OVER_REFERENCES = "mean_over_references"  # per example, the mean F1 over its references
REFERENCE_RULES = {
    BEST_REFERENCE: "per example and ROUGE type, the F1 of the best-matching reference (rouge_score score_multi)",
    MEAN_OVER_REFERENCES: "per example and ROUGE type, the F1 averaged over its references",
}

# A rung's row, beyond Tune's own fields: what `best` shows of the best rung.
RUNG_METRICS = (*ROUGE_METRICS, EVAL_LOSS, "train_loss", "step", "tokens_seen")
