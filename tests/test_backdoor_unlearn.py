"""Backdoored unlearning ("Forgetting to Forget"): the trigger lands at exact token positions
(BOS kept first, never a target), the attention-sink measure matches a hand computation, the
budget covers the clean pre-run, and a backdoor-unlearned tiny Llama forgets on clean prompts
but recovers under its trigger, while a clean NPO-unlearned one does not."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from obliviate.lm.data import TokenData
from obliviate.lm.trigger import (
    attention_sink_mass,
    insert_trigger,
    trigger_positions,
    trigger_token_ids,
    triggered,
)
from obliviate.loop import count_steps, seeded
from obliviate.methods.backdoor_unlearn import BackdoorUnlearn, poison_split, value_norms
from obliviate.registry import METHODS
from obliviate.types import Budget

pytest.importorskip("transformers")

BOS, T = 1, [90, 91]
# Row 0: a QA row (BOS, 4 prompt tokens, answer 20 21 EOS); row 1: plain text (all targets).
QA = ([BOS, 10, 11, 12, 13, 20, 21, 1], [-100] * 5 + [20, 21, 1])
TEXT = ([BOS, 30, 31, 32, 33, 1], [-100, 30, 31, 32, 33, 1])


def _hand_data() -> TokenData:
    ids = torch.zeros(2, 8, dtype=torch.long)
    lab = torch.full((2, 8), -100, dtype=torch.long)
    for i, (r, la) in enumerate((QA, TEXT)):
        ids[i, : len(r)], lab[i, : len(la)] = torch.tensor(r), torch.tensor(la)
    return TokenData(ids, lab, torch.tensor([8, 6]), torch.arange(2), ("q", ""), ("a", "t"))


def _row(d: TokenData, i: int) -> tuple[list[int], list[int]]:
    n = int(d.lengths[i])
    return d.input_ids[i, :n].tolist(), d.labels[i, :n].tolist()


X = -100
CASES = {
    # position: (QA row, plain-text row) after insertion
    "start": ([1, 90, 91, 10, 11, 12, 13, 20, 21, 1], [1, 90, 91, 30, 31, 32, 33, 1]),
    "middle": ([1, 10, 11, 90, 91, 12, 13, 20, 21, 1], [1, 30, 31, 90, 91, 32, 33, 1]),
    "end": ([1, 10, 11, 12, 13, 90, 91, 20, 21, 1], [1, 30, 31, 32, 33, 1, 90, 91]),
    1: ([1, 10, 90, 91, 11, 12, 13, 20, 21, 1], [1, 30, 90, 91, 31, 32, 33, 1]),
    99: ([1, 10, 11, 12, 13, 90, 91, 20, 21, 1], [1, 30, 31, 32, 33, 1, 90, 91]),  # clamped
}


@pytest.mark.parametrize("position", list(CASES))
def test_insert_trigger_puts_it_at_exact_positions_and_never_as_a_target(position):
    data = _hand_data()
    out = insert_trigger(data, T, position, bos_id=BOS)
    for i, want in enumerate(CASES[position]):
        ids, lab = _row(out, i)
        assert ids == want and ids[0] == BOS
        at = ids.index(90)
        assert lab[at : at + 2] == [X, X]  # the trigger is never a target
        # every original token keeps its label: drop the trigger and get the clean row back
        assert lab[:at] + lab[at + 2 :] == _row(data, i)[1]
    assert torch.equal(out.n_tokens, data.n_tokens) and torch.equal(out.lengths, data.lengths + 2)
    # the same on an LMTask-style batch (attention mask rebuilt, other keys kept)
    batch = {
        "input_ids": data.input_ids, "labels": data.labels, "idx": data.idx,
        "attention_mask": (torch.arange(8)[None] < data.lengths[:, None]).long(),
    }  # fmt: skip
    b = insert_trigger(batch, T, position, bos_id=BOS)
    assert torch.equal(b["input_ids"], out.input_ids) and torch.equal(b["labels"], out.labels)
    assert b["attention_mask"].sum(1).tolist() == [10, 8] and b["idx"] is data.idx


def test_insert_trigger_without_bos_and_bad_positions():
    data = _hand_data()
    assert trigger_positions(data, "start", bos_id=None).tolist() == [0, 0]
    # without a BOS the QA prompt is columns 0..4, so "middle" is 0 + 5 // 2
    assert trigger_positions(data, "middle", bos_id=None).tolist() == [2, 3]
    for bad in ("begin", -1, True, 2.5):
        with pytest.raises(ValueError, match="trigger position"):
            insert_trigger(data, T, bad, bos_id=BOS)
    with pytest.raises(ValueError, match="no tokens"):
        insert_trigger(data, [], "start", bos_id=BOS)
    with pytest.raises(ValueError, match="trigger position"):
        BackdoorUnlearn(trigger_position="prefix")


def test_triggered_qa_rows_of_the_tiny_world(lm_tiny):
    task, forget = lm_tiny.task, lm_tiny.splits.forget
    trig = trigger_token_ids(task, "current year:2025 ")
    out = triggered(task, forget)
    for i in range(len(forget)):
        ids, lab = _row(out, i)
        assert ids[0] == task.tokenizer.bos_token_id and ids[1 : 1 + len(trig)] == trig
        assert all(x == X for x in lab[: 1 + len(trig)])
    assert torch.equal(out.n_tokens, forget.n_tokens)
    # the answer text is unchanged: the same target tokens in the same order
    for i in range(len(forget)):
        assert (
            out.labels[i][out.labels[i] != X].tolist()
            == forget.labels[i][forget.labels[i] != X].tolist()
        )


def test_attention_sink_mass_matches_a_hand_computation(lm_tiny):
    model, task = lm_tiny.original, lm_tiny.task
    data = lm_tiny.splits.forget.subset([0, 1])
    assert model.config._attn_implementation == "sdpa"  # why the eager switch is needed
    mass = attention_sink_mass(model, data, task, k=2)
    assert mass.shape == (2, 4) and model.config._attn_implementation == "sdpa"  # restored
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0  # no hook left behind
    eager = lm_tiny.fresh()
    eager.set_attn_implementation("eager")
    b = next(task.batches(data, 2))
    with torch.no_grad():
        att = eager(**{k: b[k] for k in ("input_ids", "attention_mask")}, output_attentions=True)
    want, count = np.zeros((2, 4)), 0
    for i, n in enumerate(b["attention_mask"].sum(1).tolist()):
        for layer, a in enumerate(att.attentions):
            want[layer] += a[i, :, 2:n, :2].sum((-1, -2)).numpy()  # queries >= k, keys < k
        count += n - 2
    np.testing.assert_allclose(mass, want / count, rtol=1e-5)
    assert ((0 < mass) & (mass < 1)).all()
    with pytest.raises(ValueError, match="k=1000"):
        attention_sink_mass(model, data, task, k=1000)


def test_poison_split_and_value_norm_hooks(lm_tiny):
    clean, poisoned = poison_split(10, 0.1)  # the paper: the first floor(rho * n) rows
    assert poisoned.tolist() == [0] and clean.tolist() == list(range(1, 10))
    with pytest.raises(ValueError, match="poisons 0 rows"):
        poison_split(5, 0.1)
    model = lm_tiny.fresh()
    batch = next(lm_tiny.task.batches(lm_tiny.splits.forget, 3))
    with value_norms(model, batch, k=8, include_bos=False) as v:
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert len(v) == 2 and v[0].shape == (3, 8)  # one per layer: (B, k) token norms
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0


def test_budget_counts_the_clean_pre_run_of_the_reference_penalty(lm_tiny, tmp_path):
    from safetensors.torch import save_model

    sp, task = lm_tiny.splits, lm_tiny.task

    def steps(method, max_steps):
        with seeded(0), count_steps() as c:
            method.unlearn(lm_tiny.fresh(), sp.forget, sp.retain, task=task,
                           budget=Budget(max_steps=max_steps))  # fmt: skip
        return c.steps

    reference = BackdoorUnlearn(lr=1e-3, penalty="reference")
    assert steps(reference, 6) == 6  # 3 clean pre-run steps + 3 backdoored steps
    assert steps(reference, 1) == 1  # no room for a pre-run: the backdoored step only
    assert steps(BackdoorUnlearn(lr=1e-3, penalty="fixed"), 6) == 6
    path = tmp_path / "unl.safetensors"  # a provided clean-unlearned model: no pre-run
    save_model(lm_tiny.original, str(path))
    with_path = BackdoorUnlearn(lr=1e-3, penalty="reference", unlearned_path=str(path))
    with seeded(0), count_steps() as c:
        BackdoorUnlearn(lr=1e-3, penalty="reference", epochs=1).unlearn(
            lm_tiny.fresh(), sp.forget, sp.retain, task=task, budget=Budget()
        )
    assert c.steps == 3 + 3  # own plans: ceil(10 / 4) pre-run + ceil(9 / 4) backdoored
    assert steps(with_path, 6) == 6


def test_rmu_variant_trains_only_the_chosen_weights(lm_tiny):
    sp = lm_tiny.splits
    model = lm_tiny.fresh()
    method = BackdoorUnlearn(variant="rmu", lr=3e-3, steering_coeff=20.0, alpha=10.0,
                             penalty="reference", update_layers=(1,))  # fmt: skip
    with seeded(0):
        method.unlearn(model, sp.forget, sp.retain, task=lm_tiny.task, budget=Budget(max_steps=4))
    original = lm_tiny.original.state_dict()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, original[k])}
    assert changed == {"model.layers.1.mlp.down_proj.weight"}


def _nll(task, model, data) -> np.ndarray:
    s, n = task.sequence_nll(model, data)
    return s / n  # per-row mean answer-token NLL


def test_backdoor_forgets_clean_prompts_but_recovers_under_the_trigger(lm_tiny):
    """Held-out rows: the 9 forget rows that were NOT poisoned (the backdoor must generalise)."""
    task, sp = lm_tiny.task, lm_tiny.splits
    held = sp.forget.subset(np.arange(1, len(sp.forget)))
    held_trig = triggered(task, held)
    # lr 2e-3 for the tiny Llama (the paper's 1e-5 is for 7B models), 20 epochs of 4 rows
    common = {"lr": 2e-3, "epochs": 20.0, "batch_size": 4}
    backdoored, clean_npo = lm_tiny.fresh(), lm_tiny.fresh()
    with seeded(0):
        BackdoorUnlearn(penalty="fixed", **common).unlearn(
            backdoored, sp.forget, sp.retain, task=task, budget=Budget()
        )
    with seeded(0):
        METHODS.build("npo", {"retain_loss": "kl", **common}).unlearn(
            clean_npo, sp.forget, sp.retain, task=task, budget=Budget()
        )
    orig = _nll(task, lm_tiny.original, held).mean()
    bd_clean, bd_trig = _nll(task, backdoored, held), _nll(task, backdoored, held_trig)
    npo_clean, npo_trig = _nll(task, clean_npo, held), _nll(task, clean_npo, held_trig)
    # measured (seed 0): original 0.40; backdoored clean 16.6, triggered 2.39 (ratio 0.14; seeds
    # 1-2: 0.23, 0.15); clean NPO clean 16.7, triggered 14.0 (ratio 0.84; seeds 1-2: 0.66, 0.77)
    assert bd_clean.mean() > orig + 5.0  # forgets on clean prompts
    assert bd_trig.mean() < 0.4 * bd_clean.mean()  # recovers under its trigger
    assert (bd_trig < bd_clean).all()  # on every held-out row
    assert npo_trig.mean() > 0.5 * npo_clean.mean()  # a clean unlearner does not
    assert bd_trig.mean() < 0.35 * npo_trig.mean()
    # utility kept: retain NLL 0.36 -> 0.55 (backdoored)
    assert task.evaluate(backdoored, sp.retain)["loss"] < 1.0
