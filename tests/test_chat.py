import copy

import pytest
from transformers import AutoTokenizer

from diffutron.text.chat import (
    CHAT_MARKERS,
    COMPACT_CHAT_TEMPLATE,
    DEFAULT_CHAT_TEMPLATE,
    add_chat_markers,
    extract_answer,
    format_chat,
    format_compact,
    install_chat_template,
    prompt_and_answer,
    render_with,
)

CONVERSATIONS = [
    [{"role": "user", "content": "Türkiye'nin başkenti neresidir?"}],
    [
        {"role": "system", "content": "Sen yardımsever bir asistansın."},
        {"role": "user", "content": "  İğdır nerededir?  "},
        {"role": "assistant", "content": "Doğu Anadolu'dadır.\n"},
    ],
    [
        {"role": "user", "content": "Merhaba!"},
        {"role": "assistant", "content": "Merhaba, nasılsın?"},
        {"role": "user", "content": "İyiyim.\n\nSen?"},
        {"role": "assistant", "content": "Ben de iyiyim."},
    ],
]


@pytest.fixture
def tok(tokenizer):
    """A copy of the session tokenizer, so installing a template here changes no other test."""
    return copy.deepcopy(tokenizer)


def test_the_default_template_is_the_published_bert_style_format():
    text = format_chat(CONVERSATIONS[1], add_generation_prompt=False)
    assert text == (
        "[SYS]\nSen yardımsever bir asistansın.\n[/SYS]\n\n"
        "[Question]\nİğdır nerededir?\n[/Question]\n\n"
        "[Answer]\nDoğu Anadolu'dadır.\n[/Answer]\n\n"
    )
    assert format_chat(CONVERSATIONS[0], add_generation_prompt=True).endswith("[/Question]\n\n[Answer]\n")


@pytest.mark.parametrize("generation_prompt", [False, True])
def test_apply_chat_template_and_format_chat_give_identical_strings(tok, generation_prompt):
    install_chat_template(tok)
    for messages in CONVERSATIONS:
        want = format_chat(messages, add_generation_prompt=generation_prompt)
        got = tok.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=False)
        assert got == want


def test_the_template_is_saved_with_the_tokenizer_and_works_after_reloading(tmp_path, tok):
    install_chat_template(tok)
    tok.save_pretrained(tmp_path / "tok")
    again = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert again.chat_template == DEFAULT_CHAT_TEMPLATE
    messages = CONVERSATIONS[2][:3]
    text = again.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == format_chat(messages, add_generation_prompt=True)


def test_multi_turn_earlier_turns_are_prompt_and_the_last_answer_is_the_target():
    prompt, answer = prompt_and_answer(CONVERSATIONS[2])
    assert prompt == format_chat(CONVERSATIONS[2][:3], add_generation_prompt=True)
    assert "Merhaba, nasılsın?" in prompt and prompt.endswith("[Answer]\n")
    assert answer == "Ben de iyiyim.\n[/Answer]\n\n"
    assert prompt + answer == format_chat(CONVERSATIONS[2])


def test_a_custom_jinja_template_splits_the_same_way(tok):
    jinja = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</{{ m['role'] }}>{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    prompt, answer = prompt_and_answer(CONVERSATIONS[2], render_with(tok, jinja))
    assert prompt.endswith("<user>İyiyim.\n\nSen?</user><assistant>")
    assert answer == "Ben de iyiyim.</assistant>"


def test_conversations_that_cannot_be_trained_on_are_refused(tok):
    with pytest.raises(ValueError, match="end with an assistant"):
        prompt_and_answer(CONVERSATIONS[0])
    late_system = [CONVERSATIONS[0][0], {"role": "system", "content": "x"}]
    with pytest.raises(ValueError, match="system message may only come first"):
        format_chat(late_system)
    install_chat_template(tok)
    with pytest.raises(Exception, match="roles are"):  # the Jinja twin refuses it too
        tok.apply_chat_template(late_system, tokenize=False)


def test_extract_answer_stops_at_the_end_of_the_turn():
    assert extract_answer("Ankara'dır.\n[/Answer]\n\n[Question]\nbaşka") == "Ankara'dır."
    assert extract_answer(" yarım cevap") == "yarım cevap"


def test_compact_template_in_jinja_and_python_agree_and_split_prompt_from_answer(tok):
    assert install_chat_template(tok, "compact") == COMPACT_CHAT_TEMPLATE
    for messages in CONVERSATIONS:
        for generation_prompt in (False, True):
            want = format_compact(messages, add_generation_prompt=generation_prompt)
            got = tok.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=False)
            assert got == want
    assert format_compact(CONVERSATIONS[1]) == (
        "[SYS] Sen yardımsever bir asistansın.[/SYS][Question] İğdır nerededir?[/Question]"
        "[Answer] Doğu Anadolu'dadır.[/Answer]"
    )
    prompt, answer = prompt_and_answer(CONVERSATIONS[2], render_with(tok, "compact"))
    assert prompt.endswith("[/Question][Answer]") and answer == " Ben de iyiyim.[/Answer]"
    assert extract_answer(answer + "[Question] sonra") == "Ben de iyiyim."


def test_chat_markers_are_one_token_each_round_trip_and_let_a_word_keep_its_tokens(tok):
    assert add_chat_markers(tok) == list(CHAT_MARKERS) and add_chat_markers(tok) == []  # idempotent
    n = len(tok)
    ids = {m: tok(m, add_special_tokens=False)["input_ids"] for m in CHAT_MARKERS}
    assert all(len(v) == 1 and v[0] >= n - len(CHAT_MARKERS) for v in ids.values())
    text = format_compact(CONVERSATIONS[2])
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"], skip_special_tokens=True) == text
    # the question's last word is spelled in the answer with the same tokens, right after 2 markers
    messages = [
        {"role": "user", "content": "Aynen yaz: güçsüz Iğdır"},
        {"role": "assistant", "content": "güçsüz Iğdır"},
    ]
    prompt, answer = prompt_and_answer(messages, format_compact)
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    a = tok(answer, add_special_tokens=False)["input_ids"]
    item = a[: a.index(ids["[/Answer]"][0])]
    assert p[-2:] == [ids["[/Question]"][0], ids["[Answer]"][0]]
    assert p[-2 - len(item) : -2] == item
    # the default template spells the same words differently after its newline: why compact exists
    prompt, answer = prompt_and_answer(messages)
    assert tok(answer, add_special_tokens=False)["input_ids"][: len(item)] != item
