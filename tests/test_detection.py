"""Vulnerability detection: PrimeVul loader, the bundled labelled set, answer parser, rewards and metrics."""

from __future__ import annotations

import difflib
import json
import shutil
import subprocess
from collections import Counter

import pytest
from repairrl.data.detection import function_name, load_detection_samples
from repairrl.data.detection_mini import (
    DETECTION_MINI_DIR,
    SUFFIXES_OF_KIND,
    detection_mini_entries,
    detection_mini_rows,
)
from repairrl.data.loaders import DatasetError, DatasetSpec
from repairrl.records import RecordError
from repairrl.singleturn.detection import (
    DETECTION_LABELS,
    answer_format_reward,
    detection_messages,
    detection_metrics,
    label_reward,
    parse_detection_answer,
)
from repairrl.tasks import DetectionSample, read_samples, write_samples

COMMIT = "0123456789abcdef0123456789abcdef01234567"
VULNERABLE_FUNC = """static int
read_name(char *dst, const char *src, size_t n)
{
    memcpy(dst, src, n);
    return 0;
}
"""
PATCHED_FUNC = """static int
read_name(char *dst, const char *src, size_t n)
{
    if (n > 16)
        return -1;
    memcpy(dst, src, n);
    return 0;
}
"""


def primevul_row(idx, target=1, func=VULNERABLE_FUNC, **overrides):
    row = {
        "idx": idx,
        "project": "openssl",
        "commit_id": COMMIT,
        "target": target,
        "func": func,
        "cwe": ["CWE-787"],
        "cve": "CVE-2024-0001",
        "file_name": "ssl/names.c",
        "func_hash": 1234,
        "commit_url": f"https://github.com/openssl/openssl/commit/{COMMIT}",
    }
    row.update(overrides)
    return row


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def primevul_spec(**kw):
    return DatasetSpec(name="primevul", format="primevul", **kw)


def load_rows(rows, **kw):
    return load_detection_samples(primevul_spec(**kw), rows=rows)


def sample(sample_id, label, pair_id=None):
    return DetectionSample(
        sample_id=sample_id,
        dataset="t",
        code="int f(void) { return 0; }",
        label=label,
        cwe=[],
        project="p",
        commit_id=None,
        pair_id=pair_id,
    )


# Loader


def test_local_primevul_jsonl_file_loads_through_read_rows(tmp_path):
    rows = [primevul_row(7, target=1), primevul_row(8, target=0)]
    path = write_rows(tmp_path / "primevul_test.jsonl", rows)
    samples, skipped = load_detection_samples(primevul_spec(path=str(path), split="eval"))
    assert skipped == []
    first, second = samples
    assert (first.sample_id, first.label, second.sample_id, second.label) == (
        "openssl-7",
        "vulnerable",
        "openssl-8",
        "benign",
    )
    assert first.cwe == ["CWE-787"] and first.project == "openssl" and first.commit_id == COMMIT
    assert first.code == VULNERABLE_FUNC and first.dataset == "primevul" and first.split == "eval"
    assert first.language == "c"
    assert first.extra["cve"] == "CVE-2024-0001" and first.extra["function_name"] == "read_name"


# A list, not a dict: True == 1, so a dict would keep only one of them.
TARGETS_AND_LABELS = [(1, "vulnerable"), (0, "benign"), ("1", "vulnerable"), ("0", "benign")]
TARGETS_AND_LABELS += [(True, "vulnerable"), (False, "benign")]


@pytest.mark.parametrize(("target", "label"), TARGETS_AND_LABELS)
def test_target_converts_to_label(target, label):
    (converted,) = load_detection_samples(primevul_spec(), rows=[primevul_row(1, target=target)]).samples
    assert converted.label == label


@pytest.mark.parametrize("target", [2, -1, "yes", 0.5, None])
def test_target_that_is_not_a_label_is_a_row_error(target):
    with pytest.raises(DatasetError, match="field 'target'"):
        load_detection_samples(primevul_spec(), rows=[primevul_row(1, target=target)])


def test_missing_func_error_names_dataset_row_and_field():
    rows = [primevul_row(1), primevul_row(2, func=None)]
    with pytest.raises(DatasetError) as caught:
        load_detection_samples(primevul_spec(), rows=rows)
    message = str(caught.value)
    assert "dataset 'primevul' row 1 (openssl-2)" in message
    assert "'func'" in message and "on_bad_row: skip" in message


def test_empty_func_is_a_row_error():
    with pytest.raises(DatasetError, match="'func'"):
        load_detection_samples(primevul_spec(), rows=[primevul_row(1, func="  \n")])


def test_on_bad_row_skip_records_the_bad_rows_and_keeps_the_rest():
    rows = [primevul_row(1), primevul_row(2, func=""), primevul_row(3, target="maybe"), primevul_row(4)]
    samples, skipped = load_detection_samples(primevul_spec(on_bad_row="skip"), rows=rows)
    assert [s.sample_id for s in samples] == ["openssl-1", "openssl-4"]
    assert [(s["row"], s["instance_id"]) for s in skipped] == [(1, "openssl-2"), (2, "openssl-3")]
    assert "'func'" in skipped[0]["reason"] and "'target'" in skipped[1]["reason"]


def test_malformed_commit_id_fails_the_schema_check():
    with pytest.raises(DatasetError, match="commit_id"):
        load_detection_samples(primevul_spec(), rows=[primevul_row(1, commit_id="not-a-commit")])


def test_cwe_may_be_missing_empty_or_json_encoded():
    rows = [primevul_row(1, cwe=[]), primevul_row(2, cwe=None), primevul_row(3, cwe='["CWE-125", "CWE-787"]')]
    del rows[1]["cwe"]
    samples = load_detection_samples(primevul_spec(), rows=rows).samples
    assert [s.cwe for s in samples] == [[], [], ["CWE-125", "CWE-787"]]


def test_duplicate_sample_ids_are_an_error_or_skipped_as_configured():
    with pytest.raises(DatasetError, match="duplicate sample_id 'openssl-1'"):
        load_detection_samples(primevul_spec(), rows=[primevul_row(1), primevul_row(1)])
    samples, skipped = load_detection_samples(primevul_spec(on_bad_row="skip"), rows=[primevul_row(1), primevul_row(1)])
    assert len(samples) == 1
    assert skipped == [{"row": 1, "instance_id": "openssl-1", "reason": "duplicate sample_id"}]


def test_row_sample_id_wins_over_project_and_idx():
    (converted,) = load_rows([primevul_row(1, sample_id="custom-1")]).samples
    assert converted.sample_id == "custom-1"


def test_cpp_file_name_gives_cpp_language():
    (converted,) = load_rows([primevul_row(1, file_name="src/a.cc")]).samples
    assert converted.language == "cpp"


def test_paired_file_gives_vulnerable_and_patched_version_one_pair_id(tmp_path):
    rows = [
        primevul_row(10, target=1, func=VULNERABLE_FUNC),
        primevul_row(11, target=0, func=PATCHED_FUNC),
        # Same commit, another function: no partner.
        primevul_row(12, target=0, func="void other(void)\n{\n}\n"),
        # A patched version from another commit is not the partner of the first.
        primevul_row(13, target=0, func=PATCHED_FUNC, commit_id="f" * 40),
    ]
    path = write_rows(tmp_path / "primevul_test_paired.jsonl", rows)
    samples = load_detection_samples(primevul_spec(path=str(path))).samples
    pair_ids = {s.sample_id: s.pair_id for s in samples}
    assert pair_ids == {
        "openssl-10": f"openssl-{COMMIT[:12]}-read_name",
        "openssl-11": f"openssl-{COMMIT[:12]}-read_name",
        "openssl-12": None,
        "openssl-13": None,
    }


def test_two_vulnerable_versions_of_one_function_are_not_a_pair():
    rows = [primevul_row(1, target=1), primevul_row(2, target=1, func=PATCHED_FUNC)]
    assert [s.pair_id for s in load_detection_samples(primevul_spec(), rows=rows).samples] == [None, None]


def test_explicit_pair_id_wins_over_derived_pairing():
    rows = [
        primevul_row(1, target=1, pair_id="cve-2024-0001"),
        primevul_row(2, target=0, func=PATCHED_FUNC, pair_id="cve-2024-0001"),
        primevul_row(3, target=1, func="int lonely(int x) { return x; }", pair_id="lonely-pair"),
    ]
    samples = load_detection_samples(primevul_spec(), rows=rows).samples
    assert [s.pair_id for s in samples] == ["cve-2024-0001", "cve-2024-0001", "lonely-pair"]


@pytest.mark.parametrize(
    ("code", "name"),
    [
        ("static int\nread_name(char *dst)\n{\n}", "read_name"),
        ("int __attribute__((noinline)) f(void) { return g(1); }", "f"),
        ("/* parse(x) */ void parse_all(int n) { }", "parse_all"),
        ("Status Foo::Bar(int x) const {\n  return Baz(x);\n}", "Foo::Bar"),
        ("no signature here", None),
    ],
)
def test_function_name_comes_from_the_signature(code, name):
    assert function_name(code) == name


def test_limit_split_filter_and_instance_ids(tmp_path):
    rows = [primevul_row(i, split="train" if i % 2 else "valid") for i in range(1, 9)]
    path = write_rows(tmp_path / "rows.jsonl", rows)
    train = load_detection_samples(primevul_spec(path=str(path), split_filter="train")).samples
    assert [s.sample_id for s in train] == ["openssl-1", "openssl-3", "openssl-5", "openssl-7"]
    limited = load_detection_samples(primevul_spec(path=str(path), split_filter="valid", limit=2)).samples
    assert [s.sample_id for s in limited] == ["openssl-2", "openssl-4"]
    chosen_ids = ["openssl-6", "openssl-1"]
    chosen = load_detection_samples(primevul_spec(path=str(path), instance_ids=chosen_ids)).samples
    assert [s.sample_id for s in chosen] == ["openssl-1", "openssl-6"]


def test_unknown_format_is_an_error():
    with pytest.raises(DatasetError, match="unknown detection format"):
        load_detection_samples(DatasetSpec(name="x", format="swe-bench"), rows=[])


def test_samples_round_trip_through_jsonl(tmp_path):
    samples = load_rows([primevul_row(1), primevul_row(2, target=0)]).samples
    path = tmp_path / "samples.jsonl"
    assert write_samples(path, samples) == 2
    assert read_samples(path) == samples


def test_sample_answers_to_instance_id_and_repo_like_a_task():
    (converted,) = load_rows([primevul_row(5)]).samples
    assert (converted.instance_id, converted.repo) == ("openssl-5", "openssl")
    assert "instance_id" not in converted.to_record()
    assert sample("a", "benign").repo == "p"


def test_record_with_unknown_label_fails_schema_validation():
    record = sample("a", "vulnerable").to_record()
    DetectionSample.from_record(record)
    with pytest.raises(RecordError, match="field 'label'"):
        DetectionSample.from_record({**record, "label": "maybe"}, where="samples.jsonl:3")
    with pytest.raises(RecordError, match="samples.jsonl:3"):
        DetectionSample.from_record({**record, "surprise": 1}, where="samples.jsonl:3")


# The bundled set


@pytest.fixture(scope="module")
def mini_samples():
    return load_detection_samples(DatasetSpec(name="detection-mini", format="detection-mini")).samples


def test_bundled_set_has_eight_pairs_and_eight_lone_functions(mini_samples):
    assert len(mini_samples) == 24
    pair_sizes = Counter(s.pair_id for s in mini_samples if s.pair_id)
    assert len(pair_sizes) == 8 and set(pair_sizes.values()) == {2}
    lone = [s for s in mini_samples if s.pair_id is None]
    assert Counter(s.label for s in lone) == {"vulnerable": 4, "benign": 4}
    lone_cwes = [s.cwe[0] for s in lone if s.label == "vulnerable"]
    paired_cwes = {s.cwe[0] for s in mini_samples if s.pair_id}
    assert len(set(lone_cwes)) == 4 and not set(lone_cwes) & paired_cwes
    assert paired_cwes == {f"CWE-{n}" for n in (787, 125, 476, 190, 416, 22, 78, 134)}


def test_bundled_pairs_hold_one_vulnerable_and_one_patched_version_with_one_cwe(mini_samples):
    by_pair: dict[str, list[DetectionSample]] = {}
    for s in mini_samples:
        if s.pair_id:
            by_pair.setdefault(s.pair_id, []).append(s)
    for members in by_pair.values():
        assert sorted(m.label for m in members) == ["benign", "vulnerable"]
        assert members[0].cwe == members[1].cwe and len(members[0].cwe) == 1


@pytest.mark.parametrize(("split", "pairs", "lone"), [("train", 5, 4), ("eval", 3, 4)])
def test_bundled_splits_hold_both_classes(split, pairs, lone):
    spec = DatasetSpec(name="detection-mini", format="detection-mini", split=split, split_filter=split)
    samples = load_detection_samples(spec).samples
    assert len({s.pair_id for s in samples if s.pair_id}) == pairs
    assert sum(1 for s in samples if s.pair_id is None) == lone
    assert {s.label for s in samples} == set(DETECTION_LABELS) and {s.split for s in samples} == {split}
    assert {s.label for s in samples if s.pair_id is None} == set(DETECTION_LABELS)


def test_bundled_rows_have_primevul_fields_and_stable_ids():
    rows = detection_mini_rows()
    assert [r["idx"] for r in rows] == list(range(1, 25))
    assert all(len(r["commit_id"]) == 40 for r in rows)
    assert rows == detection_mini_rows()


def test_bundled_files_are_all_listed_in_the_table():
    listed = {f"{e.stem}{suffix}" for e in detection_mini_entries() for suffix in SUFFIXES_OF_KIND[e.kind]}
    assert {p.name for p in DETECTION_MINI_DIR.glob("*.c")} == listed


def test_bundled_fix_is_small_and_changes_the_function():
    for entry in detection_mini_entries():
        if entry.kind != "pair":
            continue
        vulnerable = (DETECTION_MINI_DIR / f"{entry.stem}.vuln.c").read_text()
        fixed = (DETECTION_MINI_DIR / f"{entry.stem}.fixed.c").read_text()
        assert vulnerable != fixed, entry.stem
        # autojunk off: on these short files it would ignore the spaces and underrate the similarity.
        assert difflib.SequenceMatcher(None, vulnerable, fixed, autojunk=False).ratio() > 0.7, entry.stem
        assert function_name(vulnerable) == function_name(fixed), entry.stem


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_bundled_functions_compile(tmp_path):
    for path in sorted(DETECTION_MINI_DIR.glob("*.c")):
        source = tmp_path / path.name
        source.write_text('#include "prelude.h"\n' + path.read_text())
        command = [
            "gcc",
            "-fsyntax-only",
            "-Werror=implicit-function-declaration",
            "-I",
            str(DETECTION_MINI_DIR),
        ]
        completed = subprocess.run([*command, str(source)], capture_output=True, text=True, check=False)
        assert completed.returncode == 0, f"{path.name}:\n{completed.stderr}"


# Prompt and parser


def test_messages_show_the_code_and_the_answer_format(mini_samples):
    messages = detection_messages(mini_samples[0])
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[1]["content"]
    assert mini_samples[0].code.strip() in user and "```c\n" in user
    assert "<answer>vulnerable</answer>" in user and "<answer>benign</answer>" in user


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("The memcpy has no bound.\n<answer>vulnerable</answer>", "vulnerable"),
        ("<answer>benign</answer>", "benign"),
        ("First <answer>benign</answer>, on reflection:\n<answer>vulnerable</answer>", "vulnerable"),
        ("<answer>vulnerable</answer> no wait <answer>benign</answer>", "benign"),
        ("<ANSWER> Vulnerable </Answer>", "vulnerable"),
        ("<answer>\nBENIGN\n</answer>", "benign"),
        ("<answer>yes</answer>", "vulnerable"),
        ("<answer>vuln</answer>", "vulnerable"),
        ("<answer>no</answer>", "benign"),
        ("<answer>safe</answer>", "benign"),
        ("<answer>Not   Vulnerable</answer>", "benign"),
        ("<answer><answer>benign</answer>", "benign"),
    ],
)
def test_parser_reads_the_last_answer(text, label):
    assert parse_detection_answer(text) == label


@pytest.mark.parametrize(
    "text",
    [
        "",
        None,
        "The function is vulnerable.",
        "<answer>vulnerable",
        "<answer>maybe</answer>",
        "<answer></answer>",
        "<answer>vulnerable</answer> then <answer>unsure</answer>",
        "<answer>vulnerable and benign</answer>",
    ],
)
def test_parser_returns_none_for_missing_or_garbage_answers(text):
    assert parse_detection_answer(text) is None


# Rewards


def test_label_reward_is_one_only_for_the_right_label():
    vulnerable = sample("a", "vulnerable")
    assert label_reward(vulnerable, "analysis\n<answer>vulnerable</answer>") == 1.0
    assert label_reward(vulnerable, "<answer>benign</answer>") == 0.0
    assert label_reward(vulnerable, "it is vulnerable") == 0.0
    assert label_reward(sample("b", "benign"), "<answer>safe</answer>") == 1.0


def test_format_reward_ignores_the_label():
    assert answer_format_reward("<answer>benign</answer>") == 1.0
    assert answer_format_reward("<answer>vulnerable</answer>") == 1.0
    assert answer_format_reward("<answer>perhaps</answer>") == 0.0
    assert answer_format_reward("vulnerable") == 0.0


# Metrics


def test_metrics_on_a_hand_computed_example():
    samples = [
        sample("v1", "vulnerable", "p1"),
        sample("b1", "benign", "p1"),  # P-C
        sample("v2", "vulnerable", "p2"),
        sample("b2", "benign", "p2"),  # P-V
        sample("v3", "vulnerable", "p3"),
        sample("b3", "benign", "p3"),  # P-B
        sample("v4", "vulnerable", "p4"),
        sample("b4", "benign", "p4"),  # P-R
        sample("v5", "vulnerable"),
        sample("b5", "benign"),
    ]
    predictions = [
        {"sample_id": "v1", "predicted": "vulnerable"},
        {"sample_id": "b1", "predicted": "benign"},
        {"sample_id": "v2", "predicted": "vulnerable"},
        {"sample_id": "b2", "predicted": "vulnerable"},
        {"sample_id": "v3", "predicted": "benign"},
        {"sample_id": "b3", "predicted": "benign"},
        {"sample_id": "v4", "predicted": "benign"},
        {"sample_id": "b4", "predicted": "vulnerable"},
        {"sample_id": "v5", "predicted": None},
        {"sample_id": "b5", "predicted": "benign"},
    ]
    metrics = detection_metrics(predictions, samples)
    assert metrics["n"] == 10 and metrics["missing"] == 0 and metrics["unknown"] == 0
    # right: v1 b1 v2 b3 b5
    assert metrics["accuracy"] == pytest.approx(0.5)
    assert metrics["format_failure_rate"] == pytest.approx(0.1)
    vulnerable = metrics["per_class"]["vulnerable"]
    # predicted vulnerable: v1 v2 b2 b4 (2 right); 5 vulnerable samples
    assert vulnerable["precision"] == pytest.approx(2 / 4) and vulnerable["recall"] == pytest.approx(2 / 5)
    assert vulnerable["f1"] == pytest.approx(2 * 0.5 * 0.4 / 0.9)
    benign = metrics["per_class"]["benign"]
    # predicted benign: b1 v3 b3 v4 b5 (3 right); 5 benign samples
    assert benign["precision"] == pytest.approx(3 / 5) and benign["recall"] == pytest.approx(3 / 5)
    assert (benign["support"], benign["predicted"]) == (5, 5)
    assert metrics["pairs"] == 4
    for name in ("pair_correct", "pair_vulnerable", "pair_benign", "pair_reversed"):
        assert metrics[name] == pytest.approx(0.25), name
    assert metrics["pairwise_accuracy"] == metrics["pair_correct"]


def test_class_never_predicted_has_zero_precision_and_f1():
    samples = [sample("v", "vulnerable"), sample("b", "benign")]
    predictions = [{"sample_id": "v", "predicted": "benign"}, {"sample_id": "b", "predicted": "benign"}]
    metrics = detection_metrics(predictions, samples)
    assert metrics["per_class"]["vulnerable"] == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "support": 1,
        "predicted": 0,
    }
    assert metrics["per_class"]["benign"]["precision"] == pytest.approx(0.5)
    assert metrics["per_class"]["benign"]["recall"] == 1.0
    assert metrics["pairs"] == 0 and metrics["pair_correct"] == 0.0


def test_metrics_use_the_first_prediction_per_sample_and_count_gaps():
    samples = [sample("v", "vulnerable", "p"), sample("b", "benign", "p"), sample("x", "benign")]
    predictions = [
        {"sample_id": "v", "predicted": "vulnerable"},
        {"sample_id": "v", "predicted": "benign"},  # best-of-N: the second answer does not count
        {"sample_id": "b", "predicted": None},
        {"sample_id": "elsewhere", "predicted": "benign"},
    ]
    metrics = detection_metrics(predictions, samples)
    assert (metrics["n"], metrics["missing"], metrics["unknown"]) == (2, 1, 1)
    assert metrics["accuracy"] == 0.5 and metrics["format_failure_rate"] == 0.5
    # v right, b unreadable: a pair, but in none of P-C, P-V, P-B, P-R.
    assert metrics["pairs"] == 1
    pair_rates = [metrics[k] for k in ("pair_correct", "pair_vulnerable", "pair_benign", "pair_reversed")]
    assert pair_rates == [0.0] * 4


def test_pair_with_one_member_unpredicted_is_not_scored():
    samples = [sample("v", "vulnerable", "p"), sample("b", "benign", "p")]
    metrics = detection_metrics([{"sample_id": "v", "predicted": "vulnerable"}], samples)
    assert metrics["pairs"] == 0 and metrics["pairwise_accuracy"] == 0.0
