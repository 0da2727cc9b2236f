"""Translation models (cluster/models/seq2seq.py, seq2seq_build.py): tokenizer, warm start, loading."""

from __future__ import annotations

import json
import unicodedata

import pytest
import torch

from cluster.errors import UserError
from cluster.models.modality import model_task
from cluster.models.modeldir import base_model_dir
from cluster.models.seq2seq import is_seq2seq_dir, load_translator, start_translator
from cluster.models.seq2seq_build import (
    target_tokenizer_from_json,
    target_tokenizer_json,
    train_target_tokenizer,
)
from tests.translation_helpers import EN, FR, TINY


@pytest.fixture(scope="module")
def target_tok():
    return train_target_tokenizer(FR, vocab_size=200, min_frequency=1)


def test_target_tokenizer_is_deterministic_and_round_trips(target_tok):
    again = train_target_tokenizer(FR, vocab_size=200, min_frequency=1)
    assert target_tokenizer_json(again) == target_tokenizer_json(target_tok)
    for text in FR[:4]:
        ids = target_tok(text_target=text)["input_ids"]
        assert ids[-1] == target_tok.eos_token_id  # every target ends with </s>
        assert target_tok.decode(ids, skip_special_tokens=True) == unicodedata.normalize("NFC", text)
    copy = target_tokenizer_from_json(target_tokenizer_json(target_tok))
    assert copy(text_target=FR[1])["input_ids"] == target_tok(text_target=FR[1])["input_ids"]
    assert [copy.pad_token_id, copy.unk_token_id, copy.bos_token_id, copy.eos_token_id] == [0, 1, 2, 3]


def test_warm_start_keeps_the_pretrained_encoder_and_random_init_does_not(target_tok):
    from safetensors.torch import load_file

    minilm = load_file(base_model_dir() / "model.safetensors")
    key = next(k for k in minilm if k.endswith("encoder.layer.0.attention.self.query.weight"))
    warm = start_translator(base_model_dir(), TINY, target_tokenizer=target_tok, init="pretrained", seed=0)
    cold = start_translator(base_model_dir(), TINY, target_tokenizer=target_tok, init="random", seed=0)
    name = "encoder." + key.removeprefix("bert.")
    assert torch.equal(warm.model.state_dict()[name], minilm[key])
    assert not torch.equal(cold.model.state_dict()[name], minilm[key])
    assert type(warm.model).__name__ == "EncoderDecoderModel" and warm.model.config.task == "translation"
    assert warm.model.config.decoder.num_hidden_layers == 1 and warm.model.config.decoder.vocab_size == len(
        target_tok
    )
    # Same seed, same new decoder: a trial restarted from scratch starts from the same weights.
    again = start_translator(base_model_dir(), TINY, target_tokenizer=target_tok, init="pretrained", seed=0)
    for (n, a), b in zip(warm.model.state_dict().items(), again.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), n


def test_training_steps_lower_the_loss_and_a_saved_model_translates_the_same(
    tmp_path, tiny_model_dir, target_tok
):
    torch.manual_seed(0)
    tr = start_translator(tiny_model_dir, TINY, target_tokenizer=target_tok, seed=0)
    opt = torch.optim.AdamW(tr.model.parameters(), lr=1e-2)
    batch = tr.encode(EN[:4], FR[:4], max_length=64, max_target_length=40)
    assert (batch["labels"] == -100).any()  # padding is left out of the loss
    losses = []
    for _ in range(40):
        tr.model.train()
        loss = tr.loss(batch)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] / 10
    out = tr.translate(EN[:4], max_new_tokens=40, batch_size=3)
    assert sum(o == f for o, f in zip(out, FR[:4], strict=True)) >= 2  # it memorised its batch
    saved = tr.save(tmp_path / "m", {"note": "test"})
    assert model_task(saved) == "translation" and is_seq2seq_dir(saved)
    assert (saved / "target_tokenizer" / "tokenizer.json").is_file()
    loaded = load_translator(saved)
    assert loaded.translate(EN[:4], max_new_tokens=40, batch_size=3) == out
    assert loaded.translate(EN[:4], max_new_tokens=40, num_beams=2) != [] and loaded.translate([]) == []


def test_order_of_batches_does_not_change_translations(tiny_model_dir, target_tok):
    tr = start_translator(tiny_model_dir, TINY, target_tokenizer=target_tok, seed=1)
    texts = [EN[0], EN[1][:20], EN[3], EN[2][:5]]
    one = tr.translate(texts, max_new_tokens=8, batch_size=1)
    assert tr.translate(texts, max_new_tokens=8, batch_size=4) == one


def _foreign(kind: str, out, tok):
    """A tiny random Marian / T5 / BART directory, saved by transformers with our tokenizer."""
    from transformers import (
        BartConfig,
        BartForConditionalGeneration,
        MarianConfig,
        MarianMTModel,
        T5Config,
        T5ForConditionalGeneration,
    )

    ids = dict(pad_token_id=0, eos_token_id=3, decoder_start_token_id=0, vocab_size=len(tok))
    small = dict(d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                 decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32)  # fmt: skip
    torch.manual_seed(0)
    if kind == "t5":
        model = T5ForConditionalGeneration(
            T5Config(d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2, **ids)
        )
    elif kind == "bart":
        model = BartForConditionalGeneration(BartConfig(bos_token_id=2, **small, **ids))
    else:
        model = MarianMTModel(MarianConfig(**small, **ids))
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


@pytest.mark.parametrize("kind", ["marian", "t5", "bart"])
def test_any_hf_seq2seq_directory_loads(tmp_path, target_tok, kind):
    d = _foreign(kind, tmp_path / kind, target_tok)
    assert "task" not in json.loads((d / "config.json").read_text())
    assert is_seq2seq_dir(d) and model_task(d) == "translation"  # by its is_encoder_decoder
    tr = load_translator(d)
    out = tr.translate(["Dieu dit", "la terre"], max_new_tokens=5)
    assert len(out) == 2 and all(isinstance(o, str) for o in out)
    tr.save(tmp_path / f"{kind}-copy", {})
    assert model_task(tmp_path / f"{kind}-copy") == "translation"  # our copy says its task
    fresh = start_translator(d, TINY, init="random", seed=3)
    assert type(fresh.model) is type(tr.model)
    pairs = list(zip(fresh.model.state_dict().values(), tr.model.state_dict().values(), strict=True))
    assert all(a.shape == b.shape for a, b in pairs) and any(not torch.equal(a, b) for a, b in pairs)


def test_pickled_weights_are_refused(tmp_path, target_tok):
    d = _foreign("bart", tmp_path / "bart", target_tok)
    (d / "model.safetensors").unlink()
    (d / "pytorch_model.bin").write_bytes(b"not even loaded")
    with pytest.raises(UserError, match=r"has no model.safetensors \(it holds pytorch_model.bin\)"):
        load_translator(d)


def test_a_classifier_is_not_a_translator(tiny_model_dir):
    assert not is_seq2seq_dir(tiny_model_dir)
    with pytest.raises(UserError, match="is not a translation model"):
        load_translator(tiny_model_dir)
    with pytest.raises(UserError, match="needs a target tokenizer"):
        start_translator(tiny_model_dir, TINY)
