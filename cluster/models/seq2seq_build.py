"""A new translation model: a target tokenizer trained on the target side, and an encoder-decoder
warm-started from a pretrained encoder (or the same architecture from scratch).

The packaged default is the way BERT checkpoints are used for generation (Rothe et al.,
"Leveraging Pre-trained Checkpoints for Sequence Generation Tasks"): the bundled MiniLM
(``base``, a 6-layer, 384-wide BERT encoder) becomes the encoder of a Hugging Face
``EncoderDecoderModel``; the decoder is a new, small BERT with causal self-attention and
cross-attention (randomly initialised, seeded), reading target-language tokens from a
tokenizer trained here with the ``tokenizers`` library. ``init: random`` draws every weight
afresh, encoder included: the same architecture without pretraining, for the comparison.

The target tokenizer is a byte-pair encoding over NFC-normalised text with SentencePiece-style
word boundaries (``Metaspace``), so decoding restores the spacing exactly; it appends ``</s>``
to every target. Training it is deterministic: the same texts give the same vocabulary (tested).
"""

from __future__ import annotations

from pathlib import Path

from cluster.errors import UserError

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"  # ids 0, 1, 2, 3 in that order
TARGET_TOKENIZER_DIR = "target_tokenizer"  # a model directory's subdirectory with the target tokenizer


def train_target_tokenizer(texts: list[str], vocab_size: int = 8000, min_frequency: int = 2):
    """A BPE tokenizer (``PreTrainedTokenizerFast``) trained on ``texts``, the target side."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if not texts:
        raise UserError("cannot train a target tokenizer on no texts")
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.normalizer = normalizers.NFC()
    # Words at spaces (kept as "▁"), then punctuation apart: "▁terre" "." decodes back to "terre."
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Metaspace(), pre_tokenizers.Punctuation()])
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[PAD, UNK, BOS, EOS],
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    eos = tok.token_to_id(EOS)
    tok.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", special_tokens=[(EOS, eos)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, unk_token=UNK, bos_token=BOS, eos_token=EOS
    )


def decoder_config(spec, vocab_size: int, max_positions: int):
    """The new decoder's BertConfig. ``spec``: cluster.specs.translation.Seq2SeqSpec."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=spec.decoder_hidden,
        num_hidden_layers=spec.decoder_layers,
        num_attention_heads=spec.decoder_heads,
        intermediate_size=4 * spec.decoder_hidden,
        max_position_embeddings=max_positions,
        is_decoder=True,
        add_cross_attention=True,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )


def new_encoder_decoder(encoder_dir: str | Path, target_tokenizer, spec, *, init: str, seed: int):
    """An ``EncoderDecoderModel``: ``encoder_dir``'s encoder (its weights with ``init: pretrained``,
    re-drawn with ``random``) and a new seeded decoder over ``target_tokenizer``'s vocabulary;
    with the ids generation needs. Returns (model, source tokenizer)."""
    import torch
    import transformers
    from transformers import AutoConfig, AutoModel, AutoTokenizer, BertLMHeadModel, EncoderDecoderModel

    from cluster.models.modeldir import require_safetensors, set_offline

    set_offline()
    transformers.logging.set_verbosity_error()  # "some weights newly initialised" is the point here
    require_safetensors(encoder_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if init == "pretrained":
            encoder = AutoModel.from_pretrained(
                encoder_dir, local_files_only=True, use_safetensors=True, trust_remote_code=False
            )
        else:
            encoder = AutoModel.from_config(AutoConfig.from_pretrained(encoder_dir, local_files_only=True))
        if encoder.get_output_embeddings() is not None or not hasattr(encoder.config, "hidden_size"):
            raise UserError(
                f"{encoder_dir} is not a bare text encoder (BERT-like) to start a translator from"
            )
        decoder = BertLMHeadModel(decoder_config(spec, len(target_tokenizer), spec.max_target_length + 2))
        model = EncoderDecoderModel(encoder=encoder, decoder=decoder)
    set_generation_ids(model, target_tokenizer)
    model.config.task = "translation"  # cluster/models/modality.py model_task
    source = AutoTokenizer.from_pretrained(encoder_dir, local_files_only=True)
    return model.eval(), source


def set_generation_ids(model, target_tokenizer) -> None:
    """decoder_start/eos/pad ids on the config and the generation config (an EncoderDecoderModel
    knows none of them by itself)."""
    ids = {
        "decoder_start_token_id": target_tokenizer.bos_token_id,
        "bos_token_id": target_tokenizer.bos_token_id,
        "eos_token_id": target_tokenizer.eos_token_id,
        "pad_token_id": target_tokenizer.pad_token_id,
    }
    for key, value in ids.items():
        setattr(model.config, key, value)
        setattr(model.generation_config, key, value)
    model.config.vocab_size = model.config.decoder.vocab_size


def target_tokenizer_json(tokenizer) -> str:
    """The target tokenizer as one JSON string (what a sweep hands its trials)."""
    return tokenizer.backend_tokenizer.to_str()


def target_tokenizer_from_json(text: str):
    """The ``PreTrainedTokenizerFast`` of :func:`target_tokenizer_json`'s string."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(text), pad_token=PAD, unk_token=UNK, bos_token=BOS, eos_token=EOS
    )
