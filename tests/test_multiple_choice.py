"""Multiple-choice evaluation: option likelihoods against plain forwards, permutation de-biasing on
constructed biased models (hand-computed accuracies), generation mapping, aggregation, end to end."""
from __future__ import annotations

import re

import pytest
import torch

from atlas_kit.multiple_choice import (TIE_TOLERANCE, cyclic_permutations, evaluate_multiple_choice,
                                       letter_of_generation, option_logprobs, pick)
from atlas_kit.passages import Passage
from atlas_kit.reader import Reader
from atlas_kit.tasks.mmlu import MCExample, format_mc_query
from atlas_kit.tokenization import train_word_tokenizer
from tests.conftest import F32_LAYOUT

OPTIONS = ["blim", "oska", "trell", "vune"]
QUESTIONS = ["what is the capital of zorvania ?", "who is the leader ?", "which river flows to the sea ?"]
PASSAGES = [
    [Passage("a", "zorvania", "the capital is blim"), Passage("b", "x", "river sea")],
    [Passage("c", "oska", "the leader is oska trell and a much longer text about the sea"), Passage("d", "y", "lamps")],
    [Passage("e", "river", "telmirok flows to the sea"), Passage("f", "x", "blim")],
]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def mc(i: int, question: str, options: list[str], label: int, subject: str = "anatomy") -> MCExample:
    return MCExample(id=f"{subject}-{i}", question=format_mc_query(question, options), answers=["ABCD"[label]],
                     metadata={"raw_question": question}, options=list(options), label=label, subject=subject)


@pytest.fixture(scope="module")
def reader():
    texts = [format_mc_query(q, OPTIONS) for q in QUESTIONS]
    texts += [f"{p.title} {p.text}" for ps in PASSAGES for p in ps] + ["question : title : context : telmirok"]
    tok = train_word_tokenizer(texts)
    return Reader.from_config(tok, d_model=32, num_layers=2, num_heads=2, d_ff=64, dropout=0.1, seed=0,
                              text_maxlength=48, answer_maxlength=4)


# ---------------------------------------------------------------------------- option_logprobs
def direct_letter_logprob(reader: Reader, query: str, passages, letter: str) -> float:
    """log p(letter + eos) from a separate, full FiD forward (its own encoder pass), one example."""
    batch = reader.tokenize([query], [passages])
    labels = reader.tokenize_answers([letter])
    logits = reader(batch["input_ids"], batch["attention_mask"], labels=labels).logits
    logp = torch.log_softmax(logits.float(), dim=-1)
    return float(logp[0].gather(-1, labels[0].unsqueeze(-1)).sum())


@pytest.mark.parametrize("training", [True, False])
def test_option_logprobs_equal_separate_forwards_and_restore_mode(reader, training):
    queries = [format_mc_query(q, OPTIONS) for q in QUESTIONS]
    reader.train(training)
    got = option_logprobs(reader, queries, PASSAGES, 4, batch_size=2)  # 2 batches, padded inputs
    assert reader.training is training
    assert got.shape == (3, 4) and got.dtype == torch.float32 and not got.requires_grad
    assert (got < 0).all() and all(p.grad is None for p in reader.parameters())
    again = option_logprobs(reader, queries, PASSAGES, 4, batch_size=3)  # other padding, same numbers: no dropout
    assert torch.allclose(got, again, **F32_LAYOUT)
    reader.eval()
    with torch.no_grad():
        for b in range(3):
            for j, letter in enumerate("ABCD"):
                assert got[b, j].item() == pytest.approx(direct_letter_logprob(reader, queries[b], PASSAGES[b], letter),
                                                         abs=1e-5)
    two = option_logprobs(reader, queries[:1], PASSAGES[:1], 2)
    assert torch.allclose(two, got[:1, :2], **F32_LAYOUT)


def test_option_logprobs_refuses_letters_the_tokenizer_cannot_tell_apart():
    tok = train_word_tokenizer(["hello world"])
    reader = Reader.from_config(tok, d_model=16, num_layers=1, num_heads=2, seed=0)
    with pytest.raises(ValueError, match="tokenize identically"):
        option_logprobs(reader, ["hello"], [[]], 4)


# ---------------------------------------------------------------------------- small pieces
def test_pick_tie_rule():
    assert pick(torch.tensor([0.25, 0.25 + TIE_TOLERANCE / 10, 0.1])).item() == 0  # near-tie -> lowest index
    assert pick(torch.tensor([0.1, 0.3, 0.3])).item() == 1
    assert pick(torch.tensor([0.1, 0.2])).item() == 1
    assert pick(torch.tensor([[1.0, 1.0], [0.0, 2.0]])).tolist() == [0, 1]


@pytest.mark.parametrize("text, expected", [
    ("B", 1), ("(B)", 1), ("b)", 1), (" c. ", 2), ("D:", 3), ("( a )", 0), ("(B) oska", 1), ("b) anything", 1),
    ("trell", 2), ("The Trell.", 2), ("E", None), ("(e)", None), ("", None), ("paris", None), ("B C", None),
])
def test_letter_of_generation(text, expected):
    assert letter_of_generation(text, OPTIONS) == expected


def test_letter_of_generation_with_two_options_and_other_letters():
    assert letter_of_generation("C", ["yes", "no"]) is None
    assert letter_of_generation("no", ["yes", "no"]) == 1
    assert letter_of_generation("y", ["yes", "no"], letters="XY") == 1


@pytest.mark.parametrize("n", [2, 3, 4])
def test_cyclic_permutations(n):
    options = ["w", "x", "y", "z"][:n]
    ex = mc(0, "Pick y?", options, label=n - 1)
    ex.metadata["keep"] = 1
    perms = cyclic_permutations(ex)
    assert len(perms) == n
    first = perms[0]
    assert (first.question, first.options, first.label, first.answers, first.id) == (ex.question, ex.options, ex.label,
                                                                                     ex.answers, ex.id)
    for s, p in enumerate(perms):
        assert p.options == options[s:] + options[:s]
        assert p.options[p.label] == options[-1] and p.answers == ["ABCD"[p.label]]
        assert p.question == format_mc_query("Pick y?", p.options)
        assert p.metadata["shift"] == s and p.metadata["keep"] == 1 and p.metadata["raw_question"] == "Pick y?"
    assert sorted(p.label for p in perms) == list(range(n))  # the right option visits every position once
    assert ex.options == options and "shift" not in ex.metadata  # the original is untouched


# ---------------------------------------------------------------------------- constructed models
LABELS = [0, 0, 0, 1, 2, 3, 3, 1]  # answer A: 3/8 = 37.5 %, answer C: 1/8 = 12.5 %


def marked_examples(labels=LABELS) -> list[MCExample]:
    """The right option's text is "right", so a scorer can find it in any (permuted) query."""
    out = []
    for i, label in enumerate(labels):
        options = [f"wrong{i}x{j}" for j in range(4)]
        options[label] = "right"
        out.append(mc(i, f"question {i}?", options, label))
    return out


def shown_options(query: str) -> list[str]:
    """The option texts of a formatted query, in the order shown."""
    return re.findall(r"\([A-Z]\) (\S+)", query.split(" answers: ", 1)[1])


def biased_scorer(bonus: float, signal: float):
    """Log-probs with a large bonus for letter A and a weaker, true signal toward the right option."""
    def score(queries, passages, n):
        logits = torch.zeros(len(queries), n)
        logits[:, 0] += bonus
        for b, q in enumerate(queries):
            opts = shown_options(q)
            if "right" in opts:
                logits[b, opts.index("right")] += signal
        return torch.log_softmax(logits, dim=-1)
    return score


def test_biased_model_plain_vs_debiased():
    examples = marked_examples()
    metrics, records = evaluate_multiple_choice(biased_scorer(bonus=5.0, signal=1.0), examples, [[]] * 8,
                                                batch_size=3)
    assert metrics["n"] == 8
    assert metrics["accuracy_likelihood"] == pytest.approx(37.5)  # always "A": right when the answer is A
    assert metrics["accuracy_debiased"] == pytest.approx(100.0)
    assert metrics["accuracy_generation"] is None  # a plain scorer and no generate callable
    assert all(r["prediction_likelihood"] == "A" for r in records)
    assert [r["prediction_debiased"] for r in records] == ["ABCD"[l] for l in LABELS]
    for r in records:
        assert sum(r["probs_debiased"]) == pytest.approx(1.0)
    # without de-biasing the same scorer is only asked the original order
    asked = []
    plain, _ = evaluate_multiple_choice(lambda q, p, n: asked.extend(q) or biased_scorer(5.0, 1.0)(q, p, n),
                                        examples, None, debias=False)
    assert plain["accuracy_debiased"] is None and plain["accuracy_likelihood"] == pytest.approx(37.5)
    assert asked == [e.question for e in examples]


def test_pure_position_bias_ties_go_to_option_a():
    """No knowledge, a fixed preference for position C: plain always says C; de-biased, every option
    visits C once, the averaged probabilities tie (up to rounding) and the tie rule picks A."""
    examples = marked_examples()
    bias = torch.log_softmax(torch.tensor([0.0, 0.5, 2.0, 0.0]), dim=-1)
    metrics, records = evaluate_multiple_choice(lambda q, p, n: bias.expand(len(q), n), examples, [[]] * 8)
    assert metrics["accuracy_likelihood"] == pytest.approx(12.5)  # answers that are C
    assert metrics["accuracy_debiased"] == pytest.approx(37.5)  # answers that are A
    for r in records:
        assert r["prediction_likelihood"] == "C" and r["prediction_debiased"] == "A"
        assert r["probs_debiased"] == pytest.approx([0.25] * 4, abs=1e-9)


def test_likelihood_generation_and_aggregation_hand_checked():
    # subject, label, option the model picks, generated text (an option's text, a letter, junk)
    rows = [
        ("anatomy", 0, 0, "A"),            # right, right
        ("anatomy", 1, 2, "opt1"),         # wrong, right (the option's text)
        ("virology", 2, 2, "(d)"),         # right, wrong
        ("abstract_algebra", 3, 1, "E"),   # wrong, None -> wrong
        ("abstract_algebra", 0, 3, "a)"),  # wrong, right
        ("cooking", 1, 1, "no idea"),      # right (not an MMLU subject), None -> wrong
    ]
    examples = [mc(i, f"q{i}?", [f"opt{j}" for j in range(4)], label, subject)
                for i, (subject, label, _, _) in enumerate(rows)]
    choice = {f"q{i}?": f"opt{c}" for i, (_, _, c, _) in enumerate(rows)}
    passages = [[Passage(f"p{i}", "t", f"text {i}")] for i in range(len(rows))]

    def scorer(queries, passages_, n):  # sure of its (position-independent) choice
        out = torch.full((len(queries), n), -10.0)
        for b, q in enumerate(queries):
            out[b, shown_options(q).index(choice[q.split(" answers: ")[0]])] = -0.01
        return out

    seen = {}

    def generate(queries, passages_):
        seen["q"], seen["p"] = list(queries), list(passages_)
        return [g for *_, g in rows]

    metrics, records = evaluate_multiple_choice(scorer, examples, passages, generate=generate, batch_size=4)
    assert seen["q"] == [e.question for e in examples] and seen["p"] == passages  # original order, same passages
    assert metrics["accuracy_likelihood"] == pytest.approx(50.0)
    assert metrics["accuracy_debiased"] == pytest.approx(50.0)
    assert metrics["accuracy_generation"] == pytest.approx(50.0)
    assert [r["prediction_generation"] for r in records] == ["A", "B", "D", None, "A", None]
    ps, pc = metrics["per_subject"], metrics["per_category"]
    assert list(ps) == ["abstract_algebra", "anatomy", "cooking", "virology"]
    assert ps["anatomy"] == {"n": 2, "accuracy_likelihood": 50.0, "accuracy_debiased": 50.0,
                             "accuracy_generation": 100.0}
    assert ps["abstract_algebra"] == {"n": 2, "accuracy_likelihood": 0.0, "accuracy_debiased": 0.0,
                                      "accuracy_generation": 50.0}
    assert ps["cooking"]["accuracy_likelihood"] == 100.0 and ps["cooking"]["accuracy_generation"] == 0.0
    assert set(pc) == {"STEM", "other", "cooking"}  # a non-MMLU subject is its own category
    assert pc["other"]["n"] == 3 and pc["other"]["accuracy_likelihood"] == pytest.approx(200 / 3)
    assert pc["other"]["accuracy_generation"] == pytest.approx(200 / 3)
    assert pc["STEM"] == ps["abstract_algebra"]
    r = records[1]
    assert (r["id"], r["subject"], r["category"], r["question"], r["gold"]) == ("anatomy-1", "anatomy", "other",
                                                                                "q1?", "B")
    assert r["options"] == ["opt0", "opt1", "opt2", "opt3"] and r["prediction_likelihood"] == "C"
    assert r["generation"] == "opt1" and len(r["probs_debiased"]) == 4


def test_validation():
    examples = marked_examples()[:2]
    with pytest.raises(ValueError, match="2 examples but 1 passage lists"):
        evaluate_multiple_choice(biased_scorer(1, 1), examples, [[]])
    with pytest.raises(ValueError, match="expected \\(2, 4\\)"):
        evaluate_multiple_choice(lambda q, p, n: torch.zeros(len(q), 3), examples, debias=False)
    with pytest.raises(ValueError, match="expected \\(8, 4\\)"):  # 2 examples x 4 shifts, one batch
        evaluate_multiple_choice(lambda q, p, n: torch.zeros(len(q), 3), examples)
    with pytest.raises(ValueError, match="at least one example"):
        evaluate_multiple_choice(biased_scorer(1, 1), [])
    with pytest.raises(TypeError):
        evaluate_multiple_choice("not a scorer", examples)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- end to end
def test_end_to_end_with_a_tiny_reader(reader):
    examples = [mc(i, q, OPTIONS, label=i, subject=s) for i, (q, s) in
                enumerate(zip(QUESTIONS, ["anatomy", "virology", "prehistory"]))]
    reader.train()
    metrics, records = evaluate_multiple_choice(reader, examples, PASSAGES, batch_size=2)
    assert reader.training
    assert metrics["n"] == 3 and set(metrics["per_subject"]) == {"anatomy", "virology", "prehistory"}
    assert set(metrics["per_category"]) == {"other", "humanities"}
    for m in ("likelihood", "debiased", "generation"):
        assert 0.0 <= metrics[f"accuracy_{m}"] <= 100.0
    for r in records:
        assert r["prediction_likelihood"] in "ABCD" and r["prediction_debiased"] in "ABCD"
        assert isinstance(r["generation"], str) and r["prediction_generation"] in (None, "A", "B", "C", "D")
        assert sum(r["probs_debiased"]) == pytest.approx(1.0, abs=1e-6)
    direct = option_logprobs(reader, [e.question for e in examples], PASSAGES, 4)
    assert torch.allclose(torch.tensor([r["logprobs"] for r in records]), direct, **F32_LAYOUT)


def test_truncated_queries_are_reported(reader, caplog):
    """Options that do not fit even without their question are reported (they lose text)."""
    short = Reader.from_config(reader.tokenizer, d_model=16, num_layers=1, num_heads=2, seed=0, text_maxlength=8)
    examples = [mc(0, QUESTIONS[0], OPTIONS, 0)]
    with caplog.at_level("WARNING", logger="atlas_kit.multiple_choice"):
        evaluate_multiple_choice(short, examples, PASSAGES[:1], debias=False, generate=False)
    assert "1 of 1 multiple-choice queries have options longer than text_maxlength=8" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="atlas_kit.multiple_choice"):
        metrics, _ = evaluate_multiple_choice(reader, examples, PASSAGES[:1], debias=False, generate=False)
    assert "exceed" not in caplog.text and metrics["accuracy_generation"] is None


# ---------------------------------------------------------------------------- truncation
def test_a_question_longer_than_the_input_keeps_every_option(reader, caplog):
    """Atlas cuts a long multiple-choice question from its START so that every option fits; the
    passage text goes first. Before, inputs were cut at the end and the last options vanished."""
    def shown(batch, row=0) -> str:  # the decoded input, spaces removed (the word tokenizer re-spaces)
        ids = batch["input_ids"][row, 0][batch["attention_mask"][row, 0].bool()]
        assert len(ids) <= reader.text_maxlength
        return reader.tokenizer.decode(ids, skip_special_tokens=True).replace(" ", "")

    long_question = " ".join(["the leader of zorvania is"] * 30) + " who is the leader ?"  # ~150 tokens > 48
    query = format_mc_query(long_question, OPTIONS)
    assert len(reader.tokenizer(reader.format_inputs(query, [])[0])["input_ids"]) > reader.text_maxlength
    for passages in ([], [PASSAGES[1][0]]):
        text = shown(reader.tokenize([query], [passages]))
        assert "answers:(a)blim(b)oska(c)trell(d)vune" in text  # every option, in order
        assert "whoistheleader?answers" in text  # the question's end survives...
        assert text.count("theleaderofzorvaniais") < 30  # ...its start does not
        assert "muchlongertext" not in text  # a question that does not fit leaves no room for text
    # a short question with a long passage: the passage text is cut, the question kept whole
    long_passage = Passage("z", "oska", " ".join(["the leader is oska trell"] * 20))
    text = shown(reader.tokenize([format_mc_query(QUESTIONS[1], OPTIONS)], [[long_passage]]))
    assert "question:whoistheleader?answers:(a)blim(b)oska(c)trell(d)vune" in text
    assert 0 < text.count("oskatrell") < 20
    # evaluation warns only when the options alone do not fit
    with caplog.at_level("WARNING"):
        metrics, _ = evaluate_multiple_choice(reader, [mc(0, long_question, OPTIONS, label=1)], [[]], debias=False,
                                              generate=False)
    assert metrics["n"] == 1 and not any("options" in r.message for r in caplog.records)
    wordy = [" ".join([o] * 12) for o in OPTIONS]  # 4 x 12 words + letters > 48 tokens
    with caplog.at_level("WARNING"):
        evaluate_multiple_choice(reader, [mc(1, "q ?", wordy, label=0)], [[]], debias=False, generate=False)
    assert any("options longer than text_maxlength" in r.message for r in caplog.records)
