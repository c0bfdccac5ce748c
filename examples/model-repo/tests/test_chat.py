"""The wrapper's own behaviour, on the real model."""
from __future__ import annotations

import pytest

from smolchat import Chat


@pytest.fixture(scope="module")
def chat() -> Chat:
    loaded = Chat(context=1024)
    yield loaded
    loaded.close()


def test_a_reply_is_words_within_the_token_limit(chat: Chat) -> None:
    answer = chat.reply("What is the capital of France?", max_tokens=12)
    assert answer.strip() and chat.tokens(answer) <= 12


def test_replies_are_greedy_so_the_same_every_time(chat: Chat) -> None:
    assert chat.reply("Name a colour.", max_tokens=8) == chat.reply("Name a colour.", max_tokens=8)


def test_asking_for_no_tokens_is_refused(chat: Chat) -> None:
    with pytest.raises(ValueError, match="at least one token"):
        chat.reply("Hello", max_tokens=0)
