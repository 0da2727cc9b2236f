"""Tiny parallel texts and a tiny translator's settings, shared by the translation tests (conftest's
``translator_dir`` is built from them)."""

from __future__ import annotations

from cluster.specs.translation import Seq2SeqSpec

FR = [
    "Au commencement, Dieu créa les cieux et la terre.",
    "La terre était informe et vide: il y avait des ténèbres à la surface de l'abîme.",
    "Dieu dit: Que la lumière soit! Et la lumière fut.",
    "Dieu vit que la lumière était bonne; et Dieu sépara la lumière d'avec les ténèbres.",
] * 5
EN = [
    "In the beginning God created the heaven and the earth.",
    "And the earth was without form, and void; and darkness was upon the face of the deep.",
    "And God said, Let there be light: and there was light.",
    "And God saw the light, that it was good: and God divided the light from the darkness.",
] * 5
TINY = Seq2SeqSpec(vocab_size=200, decoder_layers=1, decoder_hidden=32, decoder_heads=2, max_target_length=40)
