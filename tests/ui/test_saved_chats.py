"""The browser's store of conversations: saving, replacing, dropping empty ones, titles, limits and
a store that is missing or of another shape."""

from __future__ import annotations

from ui import saved_chats
from ui.saved_chats import MAX_CONVERSATIONS, choices, delete, find, save, title_of, valid_store

# As the Chatbot hands them back: content as typed parts, a side note with extra metadata keys.
HISTORY = [
    {"role": "user", "content": [{"type": "text", "text": "What is NF4?"}], "metadata": None},
    {"role": "assistant", "content": [{"type": "text", "text": "A 4-bit type."}]},
    {"role": "assistant", "content": "details",
     "metadata": {"title": "3 prompt · 4 completion tokens", "status": "done", "log": None}},
]


def test_a_conversation_is_saved_first_with_plain_content():
    store, cid = save(None, None, HISTORY, "Be brief.", now=5.0)
    assert store["current"] == cid and len(cid) == 12
    [saved] = store["conversations"]
    assert saved == {
        "id": cid, "title": "What is NF4?", "updated": 5.0, "system": "Be brief.",
        "messages": [
            {"role": "user", "content": "What is NF4?"},
            {"role": "assistant", "content": "A 4-bit type."},
            {"role": "assistant", "content": "details",
             "metadata": {"title": "3 prompt · 4 completion tokens", "status": "done"}},
        ],
    }


def test_saving_again_replaces_the_older_copy_and_moves_it_first():
    store, first = save(None, None, HISTORY[:1])
    store, second = save(store, None, [{"role": "user", "content": "Second"}])
    assert [c["id"] for c in store["conversations"]] == [second, first]
    store, again = save(store, first, HISTORY)
    assert again == first
    assert [c["id"] for c in store["conversations"]] == [first, second]
    assert len(find(store, first)["messages"]) == 3
    assert choices(store) == [("What is NF4?", first), ("Second", second)]


def test_an_emptied_conversation_is_dropped():
    store, cid = save(None, None, HISTORY)
    store, same = save(store, cid, [])
    assert same == cid and store["conversations"] == [] and find(store, cid) is None


def test_delete_and_limit():
    store = None
    for i in range(MAX_CONVERSATIONS + 3):
        store, cid = save(store, None, [{"role": "user", "content": f"q{i}"}])
    assert len(store["conversations"]) == MAX_CONVERSATIONS
    assert store["conversations"][0]["title"] == f"q{MAX_CONVERSATIONS + 2}"  # the oldest went
    store = delete(store, cid)
    assert find(store, cid) is None and store["current"] is None


def test_titles_are_one_short_line():
    assert title_of([{"role": "user", "content": "  two\nlines  "}]) == "two lines"
    long = title_of([{"role": "user", "content": "word " * 40}])
    assert len(long) == saved_chats.TITLE_CHARS and long.endswith("…")
    assert title_of([{"role": "assistant", "content": "hi"}]) == "New chat"


def test_a_store_of_another_shape_reads_as_empty():
    for junk in (None, "test", [], {"conversations": "x"}, {"current": "a"}):
        assert valid_store(junk) == {"current": None, "conversations": []}
    kept = valid_store({"current": "a", "conversations": [
        {"id": "a", "messages": []}, {"id": 3, "messages": []}, "x", {"id": "b"}]})
    assert kept == {"current": "a", "conversations": [{"id": "a", "messages": []}]}
