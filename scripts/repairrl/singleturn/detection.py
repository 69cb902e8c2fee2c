"""Vulnerability detection as a single-turn task: the prompt, the answer parser, the rewards and the metrics.

The model sees one C/C++ function, writes a short analysis and ends with `<answer>vulnerable</answer>` or
`<answer>benign</answer>`. Rewards are small pure functions composed by weights in the config; metrics follow
PrimeVul: accuracy, per-class precision/recall/F1, and the pairwise metrics over vulnerable/patched pairs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from repairrl.tasks import DetectionSample

DETECTION_LABELS = ("vulnerable", "benign")
# What a model may write inside the answer tags; small models drift to yes/no even when told the exact words.
ANSWER_SYNONYMS = {
    "vulnerable": "vulnerable",
    "vuln": "vulnerable",
    "yes": "vulnerable",
    "benign": "benign",
    "safe": "benign",
    "no": "benign",
    "not vulnerable": "benign",
}
# No "<" inside: of "<answer><answer>benign</answer>" the inner, well-formed answer counts.
_ANSWER = re.compile(r"<answer>([^<]*)</answer>", re.IGNORECASE)
CODE_FENCE_OF_LANGUAGE = {"c": "c", "cpp": "cpp"}

# Short on purpose: the small models trained on CPU lose the format in long instructions.
SYSTEM_PROMPT = "You are a security auditor who reviews C and C++ code for vulnerabilities."
USER_PROMPT = (
    "Is this function vulnerable?\n\n```{fence}\n{code}\n```\n\n"
    "Analyse it briefly (a few sentences: memory safety, input checks, error paths). Then give your final "
    "answer on its own line, exactly as <answer>vulnerable</answer> or <answer>benign</answer>."
)


def detection_messages(sample: DetectionSample) -> list[dict]:
    """The chat messages (system, user) that ask for a short analysis and a tagged final answer."""
    fence = CODE_FENCE_OF_LANGUAGE.get(sample.language, "c")
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": USER_PROMPT.format(fence=fence, code=sample.code.strip("\n"))},
    ]


def parse_detection_answer(text: str | None) -> str | None:
    """The label in the last `<answer>...</answer>` of `text`, or None when it is missing or not a label.

    Case and surrounding whitespace do not matter, and a few synonyms are accepted (see ANSWER_SYNONYMS).
    A missing or unreadable answer is a format failure, never an exception.
    """
    if not text:
        return None
    answers = _ANSWER.findall(text)
    if not answers:
        return None
    return ANSWER_SYNONYMS.get(" ".join(answers[-1].split()).lower())


def label_reward(sample: DetectionSample, answer_text: str | None) -> float:
    """1.0 when the answer's label is the sample's label; a missing or unreadable answer earns 0.0."""
    return 1.0 if parse_detection_answer(answer_text) == sample.label else 0.0


def answer_format_reward(answer_text: str | None) -> float:
    """1.0 when the text ends its reasoning with a readable `<answer>` label, whatever the label."""
    return 0.0 if parse_detection_answer(answer_text) is None else 1.0


def _rate(count: int, total: int) -> float:
    return count / total if total else 0.0


def _class_metrics(golds: list[str], predicted: list[str | None], label: str) -> dict:
    true_positives = sum(1 for g, p in zip(golds, predicted) if g == label and p == label)
    predicted_positives = sum(1 for p in predicted if p == label)
    support = sum(1 for g in golds if g == label)
    precision = _rate(true_positives, predicted_positives)
    recall = _rate(true_positives, support)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "support": support,
        "predicted": predicted_positives,
    }


def _pairwise_metrics(samples: list[DetectionSample], prediction_of: dict[str, str | None]) -> dict:
    members: dict[str, list[DetectionSample]] = {}
    for sample in samples:
        if sample.pair_id is not None and sample.sample_id in prediction_of:
            members.setdefault(sample.pair_id, []).append(sample)
    counts = {"pair_correct": 0, "pair_vulnerable": 0, "pair_benign": 0, "pair_reversed": 0}
    pairs = 0
    for group in members.values():
        by_label = {s.label: prediction_of[s.sample_id] for s in group}
        if len(group) != 2 or set(by_label) != set(DETECTION_LABELS):
            continue  # half a pair, or a malformed one: nothing to compare
        pairs += 1
        on_vulnerable, on_benign = by_label["vulnerable"], by_label["benign"]
        counts["pair_correct"] += on_vulnerable == "vulnerable" and on_benign == "benign"
        counts["pair_vulnerable"] += on_vulnerable == "vulnerable" and on_benign == "vulnerable"
        counts["pair_benign"] += on_vulnerable == "benign" and on_benign == "benign"
        counts["pair_reversed"] += on_vulnerable != "vulnerable" and on_benign != "benign"
    rates = {name: _rate(count, pairs) for name, count in counts.items()}
    return {"pairs": pairs, **rates, "pairwise_accuracy": rates["pair_correct"]}


def detection_metrics(predictions: Iterable[dict], samples: Iterable[DetectionSample]) -> dict:
    """Accuracy, per-class precision/recall/F1 and PrimeVul's pairwise metrics of `predictions` on `samples`.

    Each prediction is `{"sample_id": ..., "predicted": "vulnerable" | "benign" | None}`; None is an
    unreadable answer, which counts as wrong (and as a prediction of neither class). Where a sample has
    several predictions (best-of-N), the first counts. Samples without a prediction are left out of every
    figure and counted in `missing`; predictions for unknown sample ids are counted in `unknown`.

    Per class, precision is 0.0 when the class is never predicted (and recall 0.0 when it never occurs),
    rather than undefined, so that a model that always answers "benign" scores 0.0 on the vulnerable class.

    Pairwise, over the vulnerable/patched pairs whose two members both have a prediction (PrimeVul):
    `pair_correct` (P-C, both right: PrimeVul's pairwise accuracy), `pair_vulnerable` (P-V, both predicted
    vulnerable), `pair_benign` (P-B, both predicted benign) and `pair_reversed` (P-R, both wrong), as rates
    over `pairs`. With every answer readable the four add up to 1; an unreadable answer is wrong, so it can
    only land a pair in P-R (when the other member is wrong too) or in none of them.
    """
    samples = list(samples)
    known = {s.sample_id for s in samples}
    prediction_of: dict[str, str | None] = {}
    unknown = 0
    for prediction in predictions:
        sample_id = prediction["sample_id"]
        if sample_id not in known:
            unknown += 1
        elif sample_id not in prediction_of:
            predicted = prediction.get("predicted")
            prediction_of[sample_id] = predicted if predicted in DETECTION_LABELS else None
    scored = [s for s in samples if s.sample_id in prediction_of]
    golds = [s.label for s in scored]
    predicted = [prediction_of[s.sample_id] for s in scored]
    n = len(scored)
    return {
        "n": n,
        "missing": len(samples) - n,
        "unknown": unknown,
        "accuracy": _rate(sum(1 for g, p in zip(golds, predicted) if g == p), n),
        "format_failure_rate": _rate(sum(1 for p in predicted if p is None), n),
        "per_class": {label: _class_metrics(golds, predicted, label) for label in DETECTION_LABELS},
        **_pairwise_metrics(scored, prediction_of),
    }
