"""The task registry and the data sources: prompts as in cetvel.md, every local format, messy rows."""

import json
from pathlib import Path

import pytest

from diffutron.evaluation import tasks as T
from diffutron.evaluation.sources import PARQUET_BRANCH, load_task_data
from diffutron.evaluation.tasks import GROUPS, TASKS, get_task, render, resolve_tasks

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def first(task_name: str, **kw):
    task = get_task(task_name)
    data = load_task_data(task, data_dir=FIXTURES, **kw)
    return task, data, render(task, data.items[0].fields)


def test_registry_holds_every_task_the_issue_names():
    required = {
        "belebele_tr", "exams_tr", "ironytr", "news_cat", "mnli_tr", "sts_tr", "xcopa_tr", "xnli_tr",
        "turkish_plu_goal_inference", "turkish_plu_next_event_prediction", "turkish_plu_step_inference",
        "turkish_plu_step_ordering", "turkishmmlu", "offenseval_tr", "xquad_tr", "tquad", "xlsum_tr", "turkmorfbench",
    }  # fmt: skip
    assert required <= set(TASKS)
    assert GROUPS["diffutron"] == (
        "belebele_tr",
        "exams_tr",
        "ironytr",
        "news_cat",
        "mnli_tr",
        "sts_tr",
        "xcopa_tr",
    )
    assert [t.name for t in resolve_tasks("xcopa_tr,diffutron")][:2] == ["xcopa_tr", "belebele_tr"]
    assert len(resolve_tasks("diffutron,diffutron")) == 7
    with pytest.raises(ValueError, match="unknown task"):
        resolve_tasks("xcopa")


@pytest.mark.parametrize(
    "name, prompt, choices, gold",
    [
        (
            "belebele_tr",
            "P: Kapadokya, peri bacaları ve sıcak hava balonlarıyla tanınır.\nQ: Kapadokya ne ile tanınır?\n"
            "A: Plajlarıyla\nB: Peri bacalarıyla\nC: Fabrikalarıyla\nD: Adalarıyla\nAnswer:",
            ["A", "B", "C", "D"],
            1,
        ),
        ("exams_tr", "Türkiye'nin başkenti hangi şehirdir?", ["İstanbul", "Ankara", "İzmir", "Bursa"], 1),
        (
            "ironytr",
            "Cümle: Harika, yine yağmur yağıyor, tam pikniklik bir gün!\nSoru: Bu cümlede ironi var mı?\n",
            ["Hayır", "Evet"],
            1,
        ),
        (
            "news_cat",
            "Cümle: Merkez Bankası faiz kararını açıkladı; piyasalar güne yükselişle başladı.\n"
            "Soru: Bu cümlenin konusu nedir?\n Cevap:",
            ["spor", "magazin", "siyaset", "sağlık", "ekonomi"],
            4,
        ),
        (
            "mnli_tr",
            'Aşağıda iki cümle verilmektedir:\n\nCümle 1: "Adam sabah erkenden işe gitti."\n'
            'Cümle 2: "Adam işe gitti."\n\nBu iki cümle arasındaki ilişki nedir:',
            ["TUTARLI", "ALAKASIZ", "ÇELİŞKİLİ"],
            0,
        ),
        (
            "sts_tr",
            'Aşağıda iki cümle verilmektedir:\n\nCümle 1: "Bir adam gitar çalıyor."\n'
            'Cümle 2: "Bir adam gitar çalıyor."\n\nBu iki cümle arasında ne kadar benzerlik vardır:',
            [
                "Benzerlik Yok",
                "Düşük Benzerlik",
                "Orta Benzerlik",
                "Yüksek Benzerlik",
                "Çok Yüksek Benzerlik",
                "Mantıksal Olarak Aynı",
            ],  # fmt: skip
            5,
        ),
        ("xcopa_tr", "Kadın şemsiyesini açtı çünkü", ["yağmur yağmaya başladı.", "güneş doğdu."], 0),
        (
            "turkish_plu_next_event_prediction",
            "Hedef: Çay Demlemek Adım: Suyu çaydanlıkta kaynatın. Bir sonraki adım:",
            ["Demliğe çayı koyun.", "Arabayı park edin.", "Çimleri biçin.", "Faturayı ödeyin."],
            0,
        ),
        (
            "turkish_plu_step_ordering",
            "Hedef: Kahve Yapmak",
            [
                "Önce: Kahveyi fincana dökün. Sonra: Suyu ısıtın.",
                "Önce: Suyu ısıtın. Sonra: Kahveyi fincana dökün.",
            ],
            1,
        ),
        (
            "turkishmmlu_biology",
            "Soru: Fotosentez hangi organelde gerçekleşir?\nA. Mitokondri\nB. Kloroplast\nC. Ribozom\n"
            "D. Golgi\nE. Lizozom\nCevap:",
            ["A", "B", "C", "D", "E"],
            1,
        ),
        (
            "offenseval_tr",
            "Cümle: @KULLANICI bugünkü maç çok güzeldi\nSoru: Bu cümle nefret söylemi içermekte midir?\n",
            ["Hayır", "Evet"],
            0,
        ),
        (
            "xquad_tr",
            "Kaynak: Van Gölü, Türkiye'nin en büyük gölüdür ve Doğu Anadolu Bölgesi'nde yer alır. "
            "Gölün suyu sodalıdır.\n\nSoru: Türkiye'nin en büyük gölü hangisidir?\n\nCevap:",
            [],
            ["Van Gölü"],
        ),
        (
            "xlsum_tr",
            "Başlık: Yeni köprü açıldı\n\nMetin: Uzun süredir yapımı süren köprü, düzenlenen törenle trafiğe "
            "açıldı. Köprünün şehir içi trafiği rahatlatması bekleniyor.\n\nÖzet:",
            [],
            ["Şehrin iki yakasını bağlayan köprü trafiğe açıldı."],
        ),
    ],
)
def test_prompt_and_choices_render_exactly_as_in_cetvel(name, prompt, choices, gold):
    _, _, r = first(name)
    assert (r.prompt, r.choices, r.gold) == (prompt, choices, gold)


def test_xcopa_effect_uses_bu_yuzden_and_lowercases_the_first_letter_like_cetvel():
    task = get_task("xcopa_tr")
    item = task.prepare(
        {
            "premise": "Çocuk buzlu yolda koştu.",
            "choice1": "Kaydı ve düştü.",
            "choice2": "Istasyona gitti.",
            "question": "effect",
            "label": 0,
        }
    )
    r = render(task, item)
    # CETVEL lower-cases with Python's rules: "I" -> "i" (not Turkish "ı"); reproduced on purpose
    assert r.prompt == "Çocuk buzlu yolda koştu bu yüzden" and r.choices == [
        "kaydı ve düştü.",
        "istasyona gitti.",
    ]


@pytest.mark.parametrize(
    "score, label",
    [(0.0, 0), (0.49, 0), (0.5, 1), (1.5, 2), (2.7, 3), (3.5, 4), (4.49, 4), (4.5, 5), (5.0, 5)],
)
def test_sts_scores_fall_into_the_six_cetvel_bins(score, label):
    assert T.sts_bin(score) == label


@pytest.mark.parametrize(
    "name, n_items, problems",
    [
        ("xcopa_tr", 3, ["blank line", "neither cause nor effect", "bad JSON"]),
        ("exams_tr", 2, ["answerKey 'E' not among"]),
        ("ironytr", 4, ["blank line"]),
        ("news_cat", 7, ["empty file"]),
        ("sts_tr", 3, ["not a number", "blank line"]),
        ("turkish_plu_goal_inference", 2, ["placeholder value 'xxx'", "blank line"]),
        ("turkish_plu_next_event_prediction", 2, []),
        ("turkish_plu_step_inference", 1, ["damaged character"]),
        ("turkish_plu_step_ordering", 2, []),
        ("turkishmmlu_biology", 1, ["expected a list of 5 options"]),
        ("xquad_tr", 2, ["no reference answer"]),
        ("tquad", 2, []),
        ("belebele_tr", 1, []),
        ("mnli_tr", 2, ["no gold label"]),
        ("offenseval_tr", 2, []),
        ("xlsum_tr", 1, []),
    ],
)
def test_every_local_format_parses_and_reports_each_bad_row(name, n_items, problems):
    data = load_task_data(get_task(name), data_dir=FIXTURES)
    assert len(data.items) == n_items
    reasons = [p.reason for p in data.problems]
    assert len(reasons) == len(problems) and all(
        want in got for want, got in zip(problems, reasons, strict=True)
    )
    assert all(p.where for p in data.problems)  # every skipped row says where it was


def test_news_cat_reads_windows_1254_and_utf8_articles_with_their_folder_label():
    data = load_task_data(get_task("news_cat"), data_dir=FIXTURES)
    by_where = {i.where: i.fields for i in data.items}
    assert by_where["saglik/1.txt"]["label"] == 3 and "içmenin önemine" in by_where["saglik/1.txt"]["text"]
    assert by_where["siyasi/1.txt"]["label"] == 2  # the release's "siyasi" folder is CETVEL's "siyaset"
    assert by_where["spor/10.txt"]["text"].startswith("Milli atlet")  # a UTF-8 copy is read as UTF-8
    assert [w for w in by_where if w.startswith("spor/")] == ["spor/1.txt", "spor/10.txt"]  # natural order


def test_turkishmmlu_with_missing_subject_files_is_an_error_naming_them():
    with pytest.raises(FileNotFoundError, match="7 of 9 release files missing.*Religion_and_Ethics"):
        load_task_data(get_task("turkishmmlu"), data_dir=FIXTURES)
    data = load_task_data(get_task("turkishmmlu_biology"), data_dir=FIXTURES)  # one subject alone is fine
    assert len(data.items) == 1


def test_turkishmmlu_reads_the_release_file_names_with_spaces(tmp_path):
    from diffutron.evaluation.tasks import MMLU_SUBJECTS

    folder = tmp_path / "turkishmmlu"
    folder.mkdir()
    biology = (FIXTURES / "turkishmmlu" / "TurkishMMLU_Biology.json").read_text(encoding="utf-8")
    for subject in MMLU_SUBJECTS:  # the release: "TurkishMMLU_Religion and Ethics.json"
        (folder / f"TurkishMMLU_{subject.replace('_', ' ')}.json").write_text(biology, encoding="utf-8")
    data = load_task_data(get_task("turkishmmlu"), data_dir=tmp_path)
    assert len(data.items) == 9 and "Turkish Language and Literature" in data.source
    assert not [p for p in data.problems if "missing" in p.reason]


def test_split_option_finds_the_release_file_of_that_split():
    data = load_task_data(get_task("xcopa_tr"), data_dir=FIXTURES, split="validation")
    assert data.split == "validation" and len(data.items) == 1 and "val.tr.jsonl" in data.source


def test_limit_keeps_the_first_n_good_items():
    data = load_task_data(get_task("xcopa_tr"), data_dir=FIXTURES, limit=2)
    assert [i.where for i in data.items] == ["test.tr.jsonl:1", "test.tr.jsonl:2"]


def test_split_jsonl_with_hub_field_names_is_the_fallback(tmp_path):
    rows = [
        {
            "premise": "Kapı açıldı.",
            "choice1": "Rüzgâr esti.",
            "choice2": "Kedi uyudu.",
            "question": "cause",
            "label": 0,
        }
    ]
    (tmp_path / "xcopa_tr").mkdir()
    (tmp_path / "xcopa_tr" / "test.jsonl").write_text(
        "\n".join(json.dumps(r) for r in rows), encoding="utf-8"
    )
    data = load_task_data(get_task("xcopa_tr"), data_dir=tmp_path)
    assert len(data.items) == 1 and data.source.endswith("test.jsonl")


def test_missing_local_data_names_what_was_looked_for(tmp_path):
    with pytest.raises(FileNotFoundError, match="test.tr.jsonl"):
        load_task_data(get_task("xcopa_tr"), data_dir=tmp_path)


def test_an_explicit_file_with_any_name_is_read_by_its_extension(tmp_path):
    path = tmp_path / "my-own-name.csv"
    path.write_text(
        "sent1,sent2,ending0,ending1,ending2,ending3,label\nxxx,Kek Pişirmek,Fırını ısıtın.,Araba sürün.,Uyuyun.,Koşun.,0\n",
        encoding="utf-8",
    )
    data = load_task_data(get_task("turkish_plu_step_inference"), data_file=path)
    assert len(data.items) == 1 and data.items[0].fields["goal"] == "Kek Pişirmek"


@pytest.mark.skipif(not (SHARED / "turkish_plu_val").exists(), reason="../shared/data is not available")
@pytest.mark.parametrize("task, stem", [
    ("turkish_plu_goal_inference", "goal-inference"), ("turkish_plu_next_event_prediction", "next-event-prediction"),
    ("turkish_plu_step_inference", "step-inference"), ("turkish_plu_step_ordering", "step-ordering"),
])  # fmt: skip
def test_shared_turkish_plu_validation_files_load_when_pointed_at(task, stem):
    path = SHARED / "turkish_plu_val" / f"{stem}-val.minus_test_items.csv"
    data = load_task_data(get_task(task), data_file=path, split="validation", limit=200)
    assert len(data.items) == 200
    r = render(get_task(task), data.items[0].fields)
    assert r.prompt and all(r.choices) and 0 <= r.gold < len(r.choices)


@pytest.mark.skipif(not (SHARED / "tquad_train").exists(), reason="../shared/data is not available")
def test_shared_tquad_train_file_loads_as_squad_json():
    path = SHARED / "tquad_train" / "train-v0.1.minus_dev_contexts.json"
    data = load_task_data(get_task("tquad"), data_file=path, split="train", limit=50)
    assert len(data.items) == 50 and data.items[0].fields["answers"]


def test_turkmorfbench_is_an_offline_task_from_its_package():
    pytest.importorskip("turkmorfbench")
    data = load_task_data(get_task("turkmorfbench"), limit=5)
    assert len(data.items) == 5 and data.source == "package:turkmorfbench"
    r = render(get_task("turkmorfbench"), data.items[0].fields)
    assert r.prompt.startswith("Kelime: ") and r.prompt.endswith("\nÇekimli biçim:") and len(r.choices) >= 2


# --- the hub, without a network: a fake datasets.load_dataset -----------------------------------


class _ClassLabel:
    def __init__(self, names):
        self.names = names


_ClassLabel.__name__ = "ClassLabel"


class _FakeDataset(list):
    def __init__(self, rows, features):
        super().__init__(rows)
        self.features = features


def test_hub_class_labels_become_names_so_no_label_order_is_guessed(monkeypatch):
    import datasets

    calls = []

    def fake_load(path, name=None, split=None, revision=None):
        calls.append((path, name, split, revision))
        rows = [{"text": "Takım galip geldi.", "label": 4}, {"text": "Borsa düştü.", "label": 0}]
        # the hub's label order (alphabetical here) differs from CETVEL's choice order
        return _FakeDataset(rows, {"label": _ClassLabel(["ekonomi", "magazin", "saglik", "siyaset", "spor"])})

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    data = load_task_data(get_task("news_cat"), revision="abc123")
    assert calls == [("mcemilg/news-cat", None, "test", "abc123")]
    assert [i.fields["label"] for i in data.items] == [0, 4]  # spor, ekonomi in CETVEL's choice order
    assert data.source == "hub:mcemilg/news-cat@abc123"


def test_a_hub_loading_script_is_read_from_the_parquet_conversion(monkeypatch):
    import datasets

    revisions = []

    def fake_load(path, name=None, split=None, revision=None):
        revisions.append(revision)
        if revision != PARQUET_BRANCH:
            raise RuntimeError("Dataset scripts are no longer supported, but found xcopa.py")
        row = {
            "premise": "Kapı açıldı.",
            "choice1": "Rüzgâr esti.",
            "choice2": "Kedi uyudu.",
            "question": "cause",
            "label": 0,
        }
        return _FakeDataset([row], {"label": object()})

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    data = load_task_data(get_task("xcopa_tr"))
    assert revisions == [None, PARQUET_BRANCH] and len(data.items) == 1


def test_sample_draws_a_seeded_random_subset_across_classes_and_says_so(tmp_path):
    rows = [
        {"premise": f"Olay {i}.", "choice1": "Rüzgâr esti.", "choice2": "Kedi uyudu.", "question": "cause",
         "label": int(i >= 10)}
        for i in range(20)
    ]  # fmt: skip
    (tmp_path / "xcopa_tr").mkdir()
    (tmp_path / "xcopa_tr" / "test.jsonl").write_text(
        "\n".join(json.dumps(r) for r in rows), encoding="utf-8"
    )
    task = get_task("xcopa_tr")
    first = load_task_data(task, data_dir=tmp_path, limit=6)
    assert {i.fields["label"] for i in first.items} == {0} and first.selection == "first 6"
    a = load_task_data(task, data_dir=tmp_path, sample=6, seed=1)
    b = load_task_data(task, data_dir=tmp_path, sample=6, seed=1)
    c = load_task_data(task, data_dir=tmp_path, sample=6, seed=2)
    assert [i.where for i in a.items] == [i.where for i in b.items] != [i.where for i in c.items]
    assert {i.fields["label"] for i in a.items} == {0, 1}  # both classes, unlike the first 6
    lines = [int(i.where.split(":")[1]) for i in a.items]
    assert lines == sorted(lines) and a.selection == "random 6 of 20, seed 1"
    with pytest.raises(ValueError, match="not both"):
        load_task_data(task, data_dir=tmp_path, limit=3, sample=3)
