"""A local fake Telegram Bot API server on loopback, for driving the real bot in tests.

It answers ``{root}/bot{token}/{method}`` like Telegram does for the methods the
bot uses (getMe, deleteWebhook, setMyCommands, getUpdates with long polling and
offsets, sendMessage, editMessageText, sendMessageDraft, sendChatAction, getFile and
the file download at ``{root}/file/bot{token}/{file_path}``, recorded as a ``download``
call; anything else answers ``true``), records every call, and can answer 429 with
``parameters.retry_after`` on demand. Drafts are refused (400) outside private
chats (negative chat ids) and everywhere while ``refuse_drafts`` is set.
python-telegram-bot posts form-encoded data with nested objects as JSON strings;
JSON bodies are accepted too.

Messages keep their ``entities`` (in ``Call.params``); with ``check_entities``
(the default) a sendMessage, editMessageText or sendMessageDraft whose text is
over 4096 UTF-16 units, or whose entity reaches past the text (measured in
UTF-16 units as Telegram does), is refused with 400.

A message sent with an inline keyboard (``reply_markup``) keeps it until an edit
replaces or drops it, as Telegram does: ``with_buttons`` finds the messages showing
one, ``buttons`` reads its labels and ``press`` builds the ``callback_query`` update
of a user pressing one; ``answerCallbackQuery`` is recorded and answers ``true``.

Tests put updates in with ``enqueue`` (``message_update`` builds one,
``document_update`` one carrying a file the fake then serves, ``press`` a button
press) and read what the bot did from ``calls`` / ``texts_to``; ``wait_for`` awaits
a condition on the recorded calls instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from telegramify_markdown import utf16_len

BOT_ID = 777_000
MESSAGE_LIMIT = 4096  # UTF-16 units of text per message or draft
_TEXT_METHODS = ("sendMessage", "editMessageText", "sendMessageDraft")
BOT_USERNAME = "parallel_agents_test_bot"


@dataclass
class Call:
    """One request the bot made."""

    method: str
    params: dict[str, Any]
    at: float = field(default_factory=time.monotonic)
    status: int = 200
    result: Any = None  # what the server answered (a sent message's id is in it)

    @property
    def message_id(self) -> int:
        """The id of the message this call sent or edited."""
        return int(self.result["message_id"])


class FakeBotAPI:
    """The server; ``async with FakeBotAPI(token) as fake:`` runs it on a free port."""

    def __init__(self, token: str, check_entities: bool = True) -> None:
        self.token = token
        self.check_entities = check_entities
        self.refuse_drafts = False
        self.calls: list[Call] = []
        self._pending: list[dict[str, Any]] = []
        self._new_update = asyncio.Event()
        self._changed = asyncio.Condition()
        self._update_ids = itertools.count(1000)
        self._message_ids = itertools.count(1)
        self._file_ids = itertools.count(1)
        self.files: dict[str, bytes] = {}  # file_id -> the bytes getFile and the download serve
        self._texts: dict[tuple[int, int], str] = {}  # (chat, message) -> current text
        self._keyboards: dict[tuple[int, int], dict] = {}  # (chat, message) -> its reply_markup
        self._query_ids = itertools.count(1)
        self._failures: dict[str, list[float]] = {}  # method -> retry_after to answer with
        self._runner: web.AppRunner | None = None
        self.root = ""

    async def __aenter__(self) -> FakeBotAPI:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        app.router.add_get("/file/bot{token}/{file_path:.+}", self._download)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.root = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    # --- what tests call ------------------------------------------------------------

    def message_update(
        self, user_id: int, text: str, chat_id: int | None = None, reply_to: int | None = None
    ) -> dict:
        """A text message update (a group's when ``chat_id`` is negative, else a private
        chat's), a reply to the bot's message ``reply_to`` when given; a leading ``/word``
        is marked as a command."""
        chat = chat_id if chat_id is not None else user_id
        kind = "private" if chat > 0 else "group"
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": {"id": chat, "type": kind, "first_name": "Tester"},
            "from": {"id": user_id, "is_bot": False, "first_name": "Tester"},
            "text": text,
        }
        if reply_to is not None:
            replied = self._texts[(chat, reply_to)]
            message["reply_to_message"] = self._message(chat, reply_to, replied)
        if text.startswith("/"):
            # Telegram marks only [a-z0-9_] as the command: "/parallel-test" -> "/parallel".
            length = 1 + len(list(itertools.takewhile(_command_char, text[1:])))
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": length}]
        return {"update_id": next(self._update_ids), "message": message}

    def document_update(
        self,
        user_id: int,
        name: str,
        data: bytes,
        caption: str | None = None,
        file_size: int | None = None,
    ) -> dict:
        """A private message carrying the file ``name`` with ``data`` and ``caption``;
        ``file_size`` is the size Telegram reports (default: the real one)."""
        update = self.message_update(user_id, "")
        message = update["message"]
        del message["text"]
        file_id = f"file-{next(self._file_ids)}"
        self.files[file_id] = data
        message["document"] = {
            "file_id": file_id,
            "file_unique_id": f"unique-{file_id}",
            "file_name": name,
            "file_size": len(data) if file_size is None else file_size,
        }
        if caption is not None:
            message["caption"] = caption
        return update

    def with_buttons(self, chat_id: int) -> list[int]:
        """The messages in ``chat_id`` showing an inline keyboard now, oldest first."""
        return sorted(m for chat, m in self._keyboards if chat == chat_id)

    def buttons(self, chat_id: int, message_id: int) -> list[str]:
        """The labels of the inline keyboard message ``message_id`` shows now ([] if none)."""
        keyboard = self._keyboards.get((chat_id, message_id), {})
        return [b["text"] for row in keyboard.get("inline_keyboard", []) for b in row]

    def press(self, user_id: int, chat_id: int, message_id: int, label: str) -> dict:
        """The update of ``user_id`` pressing the button ``label`` under ``message_id``."""
        keyboard = self._keyboards[(chat_id, message_id)]
        (data,) = [
            b["callback_data"] for row in keyboard["inline_keyboard"] for b in row
            if b["text"] == label
        ]  # fmt: skip
        message = self._message(chat_id, message_id, self._texts[(chat_id, message_id)])
        return {
            "update_id": next(self._update_ids),
            "callback_query": {
                "id": f"query-{next(self._query_ids)}",
                "from": {"id": user_id, "is_bot": False, "first_name": "Tester"},
                "message": message,
                "chat_instance": f"instance-{chat_id}",
                "data": data,
            },
        }

    def enqueue(self, update: dict) -> None:
        """Hand ``update`` to the bot at its next (or current) getUpdates."""
        self._pending.append(update)
        self._new_update.set()

    def fail_next(self, method: str, retry_after: float) -> None:
        """Answer the next call of ``method`` with 429 and ``retry_after`` seconds."""
        self._failures.setdefault(method, []).append(retry_after)

    def calls_of(self, method: str, chat_id: int | None = None) -> list[Call]:
        return [
            c
            for c in self.calls
            if c.method == method
            and (chat_id is None or str(c.params.get("chat_id")) == str(chat_id))
        ]

    def texts_to(self, chat_id: int) -> list[str]:
        """Texts of successful sendMessage calls to ``chat_id``, in order."""
        return [c.params["text"] for c in self.calls_of("sendMessage", chat_id) if c.status == 200]

    def drafts_to(self, chat_id: int) -> list[Call]:
        """Successful sendMessageDraft calls to ``chat_id``, in order."""
        return [c for c in self.calls_of("sendMessageDraft", chat_id) if c.status == 200]

    async def wait_for(self, predicate: Callable[[], Any], timeout_s: float = 30.0) -> Any:
        """Wait until ``predicate()`` is truthy (checked after every call); return its value."""
        async with self._changed:
            value = predicate()
            deadline = time.monotonic() + timeout_s
            while not value:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    methods = [c.method for c in self.calls[-20:]]
                    raise AssertionError(
                        f"condition not met in {timeout_s} s; last calls {methods}"
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), remaining)
                value = predicate()
            return value

    # --- the server ---------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return _reply({"ok": False, "error_code": 401, "description": "Unauthorized"}, 401)
        method = request.match_info["method"]
        params = await _params(request)
        call = Call(method, params)
        if method != "getUpdates":
            self.calls.append(call)  # polls are not interesting and would flood the record
        retry = self._failures.get(method)
        if retry:
            call.status = 429
            seconds = retry.pop(0)
            response = _reply(
                {
                    "ok": False,
                    "error_code": 429,
                    "description": f"Too Many Requests: retry after {seconds}",
                    "parameters": {"retry_after": seconds},
                },
                429,
            )
        elif method == "getUpdates":
            response = _reply({"ok": True, "result": await self._get_updates(params)})
        else:
            status, body = self._answer(method, params)
            call.status, call.result = status, body.get("result")
            response = _reply(body, status)
        async with self._changed:
            self._changed.notify_all()
        return response

    async def _download(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.Response(status=401)
        file_path = request.match_info["file_path"]
        call = Call("download", {"file_path": file_path})
        self.calls.append(call)
        data = self.files.get(file_path.removeprefix("documents/"))
        if data is None:
            call.status = 404
        async with self._changed:
            self._changed.notify_all()
        return web.Response(status=call.status, body=data)

    async def _get_updates(self, params: dict[str, Any]) -> list[dict]:
        offset = int(params.get("offset") or 0)
        timeout = float(params.get("timeout") or 0)
        # An offset confirms every update below it: Telegram never sends those again.
        self._pending = [u for u in self._pending if u["update_id"] >= offset]
        if not self._pending and timeout > 0:
            self._new_update.clear()
            try:
                await asyncio.wait_for(self._new_update.wait(), timeout)
            except TimeoutError:
                return []
        return list(self._pending[:100])

    def _answer(self, method: str, params: dict[str, Any]) -> tuple[int, dict]:
        ok: Callable[[Any], tuple[int, dict]] = lambda result: (200, {"ok": True, "result": result})  # noqa: E731
        if method == "getMe":
            return ok(
                {
                    "id": BOT_ID,
                    "is_bot": True,
                    "first_name": "Parallel Agents",
                    "username": BOT_USERNAME,
                    "can_join_groups": True,
                    "can_read_all_group_messages": False,
                    "supports_inline_queries": False,
                }
            )
        if method == "sendMessageDraft" and (self.refuse_drafts or int(params["chat_id"]) < 0):
            return 400, {
                "ok": False,
                "error_code": 400,
                "description": "Bad Request: drafts refused",
            }
        if method in _TEXT_METHODS and self.check_entities:
            refusal = _entity_refusal(params.get("text", ""), params.get("entities") or [])
            if refusal:
                return 400, {"ok": False, "error_code": 400, "description": refusal}
        if method == "getFile":
            file_id = str(params.get("file_id"))
            if file_id not in self.files:
                return 400, {"ok": False, "error_code": 400, "description": "invalid file_id"}
            return ok(
                {
                    "file_id": file_id,
                    "file_unique_id": f"unique-{file_id}",
                    "file_size": len(self.files[file_id]),
                    "file_path": f"documents/{file_id}",
                }
            )
        if method == "sendMessage":
            chat_id = int(params["chat_id"])
            message_id = next(self._message_ids)
            self._texts[(chat_id, message_id)] = params["text"]
            self._keep_keyboard((chat_id, message_id), params.get("reply_markup"))
            return ok(self._message(chat_id, message_id, params["text"], params.get("entities")))
        if method == "editMessageText":
            key = (int(params["chat_id"]), int(params["message_id"]))
            if key not in self._texts:
                return 400, {"ok": False, "error_code": 400, "description": "message not found"}
            if self._texts[key] == params["text"]:
                return 400, {
                    "ok": False,
                    "error_code": 400,
                    "description": "Bad Request: message is not modified",
                }
            self._texts[key] = params["text"]
            self._keep_keyboard(key, params.get("reply_markup"))  # an edit without one drops it
            return ok(self._message(*key, params["text"], params.get("entities")))
        return ok(True)

    def _keep_keyboard(self, key: tuple[int, int], markup: Any) -> None:
        if isinstance(markup, dict) and markup.get("inline_keyboard"):
            self._keyboards[key] = markup
        else:
            self._keyboards.pop(key, None)

    def _message(
        self, chat_id: int, message_id: int, text: str, entities: list[dict] | None = None
    ) -> dict:
        message: dict[str, Any] = {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "group"},
            "from": {"id": BOT_ID, "is_bot": True, "first_name": "Parallel Agents"},
            "text": text,
        }
        if entities:
            message["entities"] = entities
        if (keyboard := self._keyboards.get((chat_id, message_id))) is not None:
            message["reply_markup"] = keyboard
        return message


def _entity_refusal(text: str, entities: list[dict]) -> str | None:
    """Telegram's complaint about ``text`` and its ``entities``, or None when they fit."""
    size = utf16_len(text)
    if size > MESSAGE_LIMIT:
        return f"Bad Request: message is too long ({size} UTF-16 units)"
    for entity in entities:
        offset, length = int(entity["offset"]), int(entity["length"])
        if offset < 0 or length <= 0 or offset + length > size:
            return (
                f"Bad Request: can't parse entities: entity {entity['type']} at {offset} "
                f"of length {length} is beyond the text's {size} UTF-16 units"
            )
    return None


def _command_char(char: str) -> bool:
    return char.isascii() and (char.isalnum() or char == "_")


async def _params(request: web.Request) -> dict[str, Any]:
    if request.content_type == "application/json":
        body = await request.json()
        return dict(body) if isinstance(body, dict) else {}
    form = await request.post()
    params: dict[str, Any] = {
        **request.query,
        **{k: v for k, v in form.items() if isinstance(v, str)},
    }
    for key, value in params.items():
        if key != "text" and value[:1] in "[{":  # nested objects arrive as JSON strings
            with contextlib.suppress(ValueError):
                params[key] = json.loads(value)
    return params


def _reply(body: dict, status: int = 200) -> web.Response:
    return web.json_response(body, status=status)
