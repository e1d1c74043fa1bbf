"""The LM Task, tokenizer and models on an untrained 2-layer Llama (no benchmark training)."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from obliviate.lm.data import make_world  # noqa: E402
from obliviate.lm.models import apply_lora, load_pretrained, merge_lora, tiny_llama  # noqa: E402
from obliviate.lm.task import LMTask  # noqa: E402
from obliviate.lm.tokenizer import train_bpe  # noqa: E402
from obliviate.loop import seeded  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from a second thread (and two thrash on a loaded machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def env(one_thread):
    tok = train_bpe(vocab_size=2048)
    task = LMTask(tok)
    world = make_world(seed=3, n_people=6)
    qa = list(world.qa)
    data = task.encode([q["question"] for q in qa], [q["answer"] for q in qa], meta=qa)
    with seeded(0):
        model = tiny_llama(vocab_size=len(tok), n_layers=2, d_model=64)
    return tok, task, data, model


def _manual_nll(model, batch):
    """Sum of target-token NLLs from the full logits, one example at a time, no padding."""
    out = []
    for i in range(len(batch["input_ids"])):
        n = int(batch["attention_mask"][i].sum())
        ids, lab = batch["input_ids"][i, :n][None], batch["labels"][i, :n]
        logp = F.log_softmax(model(input_ids=ids).logits[0, :-1].double(), -1)
        tgt = lab[1:]
        keep = tgt != -100
        out.append(-logp[keep].gather(1, tgt[keep][:, None]).sum())
    return torch.stack(out)


def test_loss_is_the_sum_of_target_token_nll(env):
    _, task, data, model = env
    batch = next(task.batches(data, 8))
    got = task.loss(model, batch)
    assert got.shape == (8,)
    assert torch.allclose(got.double(), _manual_nll(model, batch), atol=1e-4)
    # the batch carries the counts: the per-token mean is loss / n_tokens
    assert torch.equal(batch["n_tokens"], (batch["labels"] != -100).sum(1))


def test_prompt_and_padding_are_masked(env):
    tok, task, data, _ = env
    ids, labels, n = data.input_ids[0], data.labels[0], int(data.lengths[0])
    prompt = task._prompt_ids(data.prompts[0])
    assert ids[: len(prompt)].tolist() == prompt
    assert (labels[: len(prompt)] == -100).all() and (labels[n:] == -100).all()
    target = labels[len(prompt) : n]
    assert (target != -100).all()
    # every answer token is labelled (none merged into the prompt), then EOS
    assert tok.decode(target[:-1]).strip() == data.targets[0]
    assert int(target[-1]) == task.eos_id
    # padding has its own id and the mask comes from lengths
    batch = next(task.batches(data, len(data)))
    assert (batch["attention_mask"].sum(1) == data.lengths).all()
    assert task.pad_id != task.eos_id


def test_divergence_zero_for_self_and_positive_otherwise(env):
    tok, task, data, model = env
    batch = next(task.batches(data, 6))
    assert task.divergence(model, model, batch).abs().max() < 1e-5
    with seeded(1):
        other = tiny_llama(vocab_size=len(tok), n_layers=2, d_model=64)
    kl = task.divergence(model, other, batch)
    assert kl.shape == (6,) and (kl > 0).all()
    kl.sum().backward()  # the gradient flows into the student only
    assert model.model.embed_tokens.weight.grad is not None
    model.zero_grad(set_to_none=True)


def test_generation_equals_stepwise_greedy(env):
    _, task, data, model = env
    prompts = [data.prompts[0], data.prompts[7], "Who?"]  # different lengths: left padding
    got = task.generate(model, prompts, max_new_tokens=6)
    for p, g in zip(prompts, got, strict=True):
        ids = torch.tensor([task._prompt_ids(p)])
        new = []
        with torch.no_grad():
            for _ in range(6):
                nxt = int(model(input_ids=ids).logits[0, -1].argmax())
                if nxt == task.eos_id:
                    break
                new.append(nxt)
                ids = torch.cat([ids, torch.tensor([[nxt]])], 1)
        assert g == task.tokenizer.decode(new, skip_special_tokens=True).strip()


def test_evaluate_keys_and_consistency(env):
    _, task, data, model = env
    ev = task.evaluate(model, data)
    assert set(ev) >= {"loss", "ppl", "answer_prob"}
    s, n = task.sequence_nll(model, data)
    assert ev["loss"] == pytest.approx(s.sum() / n.sum())
    assert ev["ppl"] == pytest.approx(float(torch.tensor(ev["loss"]).exp()), rel=1e-6)


def test_tokenizer_cached_and_deterministic(tmp_path):
    a = train_bpe(vocab_size=300, max_chars_per_article=2000, cache_dir=tmp_path)
    files = list((tmp_path / "tokenizers").glob("*.json"))
    assert files, "the tokenizer was not cached"
    b = train_bpe(vocab_size=300, max_chars_per_article=2000, cache_dir=tmp_path / "again")
    assert a.get_vocab() == b.get_vocab()  # two independent trainings agree
    c = train_bpe(vocab_size=300, max_chars_per_article=2000, cache_dir=tmp_path)
    assert c.get_vocab() == a.get_vocab()
    assert a.decode(a("Ωmega 😀 text")["input_ids"]) == "Ωmega 😀 text"  # byte-level: lossless


def test_chat_without_template_is_a_clear_error(env):
    tok, _, _, _ = env
    with pytest.raises(ValueError, match="chat template"):
        LMTask(tok, chat=True).encode(["q?"], ["a"])


def test_unknown_model_offline_lists_options(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="smollm2") as e:
        load_pretrained("no-such-org/no-such-model-xyz")
    assert "tiny-llama" in str(e.value)


def test_lora_on_missing_modules_and_round_trip(env):
    tok, task, data, _ = env
    with seeded(0):
        model = tiny_llama(vocab_size=len(tok), n_layers=2, d_model=64)
    with pytest.raises(ValueError, match="q_proj"):
        apply_lora(model, target_modules=("c_attn",))
    batch = next(task.batches(data, 4))
    before = task.loss(model, batch).detach()
    lora = apply_lora(model, r=4, alpha=8)
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert torch.allclose(task.loss(lora, batch), before, atol=1e-5)  # B = 0 at init
    opt = torch.optim.SGD([p for p in lora.parameters() if p.requires_grad], lr=0.5)
    task.loss(lora, batch).mean().backward()
    opt.step()
    after = task.loss(lora, batch).detach()
    merged = merge_lora(lora)
    assert "lora" not in " ".join(merged.state_dict())
    assert torch.allclose(task.loss(merged, batch), after, atol=1e-4)
