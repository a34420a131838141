"""The Telegram bot: a Ray driver that hands chat messages to the orchestrator.

``python bot.py`` (what ``parallel-agents start`` launches when ``TELEGRAM_BOT_TOKEN``
is set) joins the running Ray cluster (``RAY_ADDRESS`` or the local one), finds the
system by name (or starts it, detached) and serves the Bot API at
``TELEGRAM_API_BASE_URL`` by long polling, or by webhook when
``PARALLEL_AGENTS_TELEGRAM_WEBHOOK_URL`` is set.

Only users in ``TELEGRAM_ALLOWED_USER_IDS`` are served. A document (plain text,
Markdown or PDF) sent with a caption is a request about that document: its size is
checked before it is downloaded, and it is read into text before the job is stored.
Every request is stored
in the job store (``actors.bot.jobs``) before any work starts, so a redelivered
update runs once and an answer survives a restart of the bot: unfinished jobs
resume at start-up and each answer is delivered exactly once. Answers are
Markdown, sent as text with entities (``actors.bot.runner.send_markdown``), the first
part a reply to the request; replies and progress are plain text.

A chat remembers: a message follows up on its sender's latest conversation in that chat, a
reply to one of the bot's messages on that message's conversation (its prompts carry the
earlier turns), ``/new`` starts afresh and ``/forget`` deletes the sender's conversations
and this chat's answers. Bot-only settings:

``PARALLEL_AGENTS_TELEGRAM_WEBHOOK_URL``      public URL; set = webhook mode
``PARALLEL_AGENTS_TELEGRAM_WEBHOOK_LISTEN``   bind address (default 127.0.0.1)
``PARALLEL_AGENTS_TELEGRAM_WEBHOOK_PORT``     bind port (default 8443)
``PARALLEL_AGENTS_TELEGRAM_WEBHOOK_SECRET``   secret token Telegram echoes back; required
                                              in webhook mode (else exit code 2)
``PARALLEL_AGENTS_TELEGRAM_EDIT_INTERVAL_S``  least time between progress edits (2)
``PARALLEL_AGENTS_TELEGRAM_TASKS_PER_USER``   requests run at once per user (1)
``PARALLEL_AGENTS_TELEGRAM_CALL_TIMEOUT_S``   longest wait for one orchestrator call (30)
``PARALLEL_AGENTS_TELEGRAM_REQUEST_TIMEOUT_S`` longest wait for one Bot API call (20)
``PARALLEL_AGENTS_TELEGRAM_CONCURRENT_UPDATES`` updates handled at once (32)
``PARALLEL_AGENTS_TELEGRAM_CONFIRM_COST_USD`` ask before a request estimated above this (1;
                                              0 = never ask)

A request estimated above that cost is asked about first, with "Run it" and "Cancel"
buttons only its sender can press; the question is stored, so a press after a restart
works. Updates are handled concurrently, so one slow call holds nobody else up; a
user's requests still run in order, one queue per user.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import AsyncIterator

from telegram import BotCommand, Update
from telegram.error import TelegramError
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    ApplicationHandlerStop,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    TypeHandler,
    filters,
)

from actors import home_lock
from actors.bot import telegram_format as fmt
from actors.bot.jobs import Job, JobKind, JobState, JobStore
from actors.bot.runner import CONFIRM_PATTERN, BotConfig, JobRunner, pressed
from actors.config import Settings, load_settings
from actors.engine.documents import ACCEPTED, Document, check_size, read_document
from actors.engine.intake import clean_request
from actors.errors import ConfigurationError, UserInputError
from actors.runtime.system import System, find_system, init_ray, start_system

log = logging.getLogger("bot")

CANNED_REQUEST = (
    "Create a comprehensive security analysis of a web application with a public REST API, "
    "a PostgreSQL database and a React front end"
)
COMMANDS = {
    "start": "what this bot does",
    "help": "commands and how requests work",
    "status": "system status and parallel metrics",
    "parallel_test": "run a canned complex request and report its parallelism",
    "parallel_status": "pools, queue and active tasks",
    "cancel": "cancel your running request",
    "new": "start a new conversation (the next message sees nothing before it)",
    "forget": "delete your conversations and answers in this chat",
}
HELP = (
    "Send any question or task as a message. Simple ones are answered directly; "
    "complex ones are split into microtasks that many agents work on in parallel, "
    "with a live progress message, then the merged answer. To ask about a document, "
    f"send it as a file ({ACCEPTED}) with the request as its caption. A message follows up "
    "on your last answer (reply to an earlier answer to follow up on that one).\n\n"
    + "\n".join(f"/{name} - {what}" for name, what in COMMANDS.items())
    + "\n\n/parallel-test and /parallel-status work too."
)


# --- handlers ------------------------------------------------------------------------


def _runner(context: ContextTypes.DEFAULT_TYPE) -> JobRunner:
    runner: JobRunner = context.bot_data["runner"]
    return runner


def _system(context: ContextTypes.DEFAULT_TYPE) -> System:
    system: System = context.bot_data["system"]
    return system


async def gatekeeper(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Let allowed users through; refuse anyone else once, log them, and stop the update."""
    if not isinstance(update, Update):
        return
    user = update.effective_user
    if user is not None and user.id in context.bot_data["allowed"]:
        return
    log.warning("refused update %s from user %s", update.update_id, user.id if user else None)
    if update.callback_query is not None:  # a press: answer it, or its button spins on
        await update.callback_query.answer("Sorry, this bot is private.", show_alert=True)
        raise ApplicationHandlerStop
    refused: set[int] = context.bot_data["refused"]
    if user is not None and user.id not in refused and update.effective_chat is not None:
        refused.add(user.id)
        await update.effective_chat.send_message("Sorry, this bot is private.")
    raise ApplicationHandlerStop


async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Greet and say what the bot does."""
    assert update.effective_message is not None
    await update.effective_message.reply_text(
        "Hello! I answer requests with many AI agents working in parallel.\n\n" + HELP
    )


async def help_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """List the commands."""
    assert update.effective_message is not None
    await update.effective_message.reply_text(HELP)


async def status(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Show the system status with the parallel metrics."""
    assert update.effective_message is not None
    pools, tasks = await _runner(context).overview()
    text = fmt.status_text(pools, tasks, simulated=_system(context).simulator is not None)
    await update.effective_message.reply_text(text)


async def parallel_status(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Show pools, queue and active tasks."""
    assert update.effective_message is not None
    pools, tasks = await _runner(context).overview()
    await update.effective_message.reply_text(fmt.parallel_status_text(pools, tasks))


async def parallel_test(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Run the canned complex request and report its parallel figures."""
    job = _record(update, context, CANNED_REQUEST, JobKind.PARALLEL_TEST)
    if job is None:
        return
    ahead = _runner(context).enqueue(job)
    await _acknowledge(update, ahead, "Parallel test started: one complex request on all pools.")


async def cancel(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Cancel the user's running request."""
    assert update.effective_message is not None and update.effective_user is not None
    task_id = await _runner(context).cancel(update.effective_user.id)
    text = f"Cancelling task {task_id}." if task_id else "Nothing of yours is running."
    await update.effective_message.reply_text(text)


async def new_conversation(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Start afresh: the user's next message in this chat opens a new conversation."""
    assert update.effective_message is not None and update.effective_user is not None
    store: JobStore = context.bot_data["store"]
    store.follow(update.effective_message.chat_id, update.effective_user.id, None)
    await update.effective_message.reply_text(fmt.NEW_CONVERSATION)


async def forget(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Delete the user's conversations (the system's store) and answers (this chat's jobs)."""
    message, user = update.effective_message, update.effective_user
    assert message is not None and user is not None
    submitter = f"telegram:{user.id}"  # as Job.submitter names it
    forgotten = await _runner(context).forget(message.chat_id, user.id, submitter)
    await message.reply_text(
        f"Forgotten: {forgotten} conversation(s) and their answers. "
        "Your next message starts afresh."
    )


async def request(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Treat any other text as a request: check it, store it, queue it."""
    assert update.effective_message is not None
    text = update.effective_message.text or ""
    try:
        clean_request(text, _settings(context).max_request_chars)
    except UserInputError as exc:
        await _refuse(update, context, text, exc)
        return
    job = _record(update, context, text, JobKind.REQUEST)
    if job is not None:
        await _acknowledge(update, _runner(context).enqueue(job), None)


async def document_request(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A document with its caption as the request: checked, downloaded, read, then queued."""
    message = update.effective_message
    assert message is not None and message.document is not None
    settings = _settings(context)
    caption, file = message.caption or "", message.document
    name = file.file_name or "document"
    try:
        if not caption.strip():
            raise UserInputError(f"send {name} again with a caption: the caption is the request")
        clean_request(caption, settings.max_request_chars)
        check_size(name, file.file_size or 0, settings)  # before downloading it
        data = bytes(await (await file.get_file()).download_as_bytearray())
        document = await asyncio.to_thread(read_document, name, data, settings)  # PDFs take CPU
    except UserInputError as exc:
        await _refuse(update, context, caption, exc)
        return
    job = _record(update, context, caption, JobKind.REQUEST, document)
    if job is not None:
        await _acknowledge(update, _runner(context).enqueue(job), None)


async def confirmation(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Run or drop a request its sender was asked about ("Run it" / "Cancel")."""
    query = update.callback_query
    assert query is not None and query.data is not None
    update_id, run = pressed(query.data)
    store: JobStore = context.bot_data["store"]
    job = store.get(update_id)
    if job is None or job.user_id != query.from_user.id:
        await query.answer("Only the person who sent the request can decide.", show_alert=True)
        return
    if run and store.confirmed(update_id):
        ahead = _runner(context).enqueue(store.get(update_id) or job)
        text = fmt.confirmed_text(job.cost_limit_usd, ahead)
        log.info("job %s: confirmed", update_id)
    elif not run and store.declined(update_id, fmt.CONFIRM_CANCELLED):
        text = fmt.CONFIRM_CANCELLED
        log.info("job %s: declined", update_id)
    else:  # pressed twice, or an old question's button
        await query.answer("That was decided already.")
        return
    await query.answer()
    await query.edit_message_text(text)


async def unsupported(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Refuse a photo, voice note, sticker or the like: only documents are read."""
    assert update.effective_message is not None
    await update.effective_message.reply_text(
        f"Sorry, I read only text and documents: send {ACCEPTED} as a file, with the request "
        "as its caption."
    )


def _settings(context: ContextTypes.DEFAULT_TYPE) -> Settings:
    settings: Settings = context.bot_data["settings"]
    return settings


def _record(
    update: Update,
    context: ContextTypes.DEFAULT_TYPE,
    text: str,
    kind: JobKind,
    *documents: Document,
) -> Job | None:
    """Store the job before anything runs, with the conversation it continues; None when
    this update was already handled."""
    message, chat, user = update.effective_message, update.effective_chat, update.effective_user
    assert message is not None and chat is not None and user is not None
    store: JobStore = context.bot_data["store"]
    conversation = None
    if kind is JobKind.REQUEST:
        replied = message.reply_to_message
        if replied is not None:  # to an answer of the user's: that answer's conversation
            conversation = store.conversation_of(chat.id, replied.message_id, user.id)
        if conversation is None:  # else the chat's latest thread, as a plain message
            conversation = store.latest_thread(chat.id, user.id)
    job = store.record(
        update.update_id,
        chat.id,
        user.id,
        text,
        kind,
        documents,
        message_id=message.message_id,
        conversation_id=conversation,
    )
    if job is None:
        log.info("update %s was delivered again; ignored", update.update_id)
    return job


async def _refuse(
    update: Update, context: ContextTypes.DEFAULT_TYPE, text: str, refusal: UserInputError
) -> None:
    """Say why a request is refused, once: it is stored as a failed job, so a redelivered
    update stays silent."""
    job = _record(update, context, text, JobKind.REQUEST)
    if job is None:
        return
    store: JobStore = context.bot_data["store"]
    store.finished(job.update_id, JobState.FAILED, f"Sorry, {refusal}.")
    await _runner(context).deliver(store.get(job.update_id) or job)


async def _acknowledge(update: Update, ahead: int, started: str | None) -> None:
    assert update.effective_message is not None
    if ahead:
        await update.effective_message.reply_text(
            f"Queued: {ahead} earlier request(s) of yours must finish first. "
            "/cancel stops the running one."
        )
    elif started:
        await update.effective_message.reply_text(started)


async def error_handler(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Log the error and tell the user briefly (a timed-out orchestrator call says so)."""
    update_id = update.update_id if isinstance(update, Update) else None
    log.error("update %s failed", update_id, exc_info=context.error)
    text = (
        fmt.BUSY
        if isinstance(context.error, TimeoutError)
        else "Sorry, something went wrong. Try again."
    )
    if isinstance(update, Update) and update.effective_chat is not None:
        with contextlib.suppress(TelegramError):
            await update.effective_chat.send_message(text)


# --- wiring --------------------------------------------------------------------------


def build_application(
    settings: Settings, system: System, store: JobStore, config: BotConfig
) -> Application:
    """The bot's ``Application`` with every handler registered."""
    if settings.telegram_bot_token is None:
        raise ValueError("TELEGRAM_BOT_TOKEN is not set")
    root = settings.telegram_api_base_url.rstrip("/")
    timeout = config.telegram_timeout_s
    app = (
        ApplicationBuilder()
        .token(settings.telegram_bot_token.get_secret_value())
        .base_url(f"{root}/bot")
        .base_file_url(f"{root}/file/bot")
        .rate_limiter(AIORateLimiter(max_retries=config.rate_limit_retries))
        # Handlers await the orchestrator: one at a time, a slow call would hold up everyone.
        .concurrent_updates(config.concurrent_updates)
        .connect_timeout(timeout)
        .read_timeout(timeout)
        .write_timeout(timeout)
        .pool_timeout(timeout)
        .get_updates_connect_timeout(timeout)
        .get_updates_read_timeout(timeout)  # PTB adds the long-poll time to this
        .get_updates_write_timeout(timeout)
        .get_updates_pool_timeout(timeout)
        .build()
    )
    app.bot_data.update(
        system=system,
        store=store,
        runner=JobRunner(app.bot, system, store, config),
        allowed=settings.allowed_user_ids,
        refused=set(),
        settings=settings,
    )
    app.add_handler(TypeHandler(Update, gatekeeper), group=-1)
    app.add_handler(CommandHandler("start", start))
    app.add_handler(CommandHandler("help", help_command))
    app.add_handler(CommandHandler("status", status))
    app.add_handler(CommandHandler("parallel_test", parallel_test))
    app.add_handler(CommandHandler("parallel_status", parallel_status))
    app.add_handler(CommandHandler("cancel", cancel))
    app.add_handler(CommandHandler("new", new_conversation))
    app.add_handler(CommandHandler("forget", forget))
    # Telegram marks only "/parallel" as the command in "/parallel-test".
    app.add_handler(MessageHandler(filters.Regex(r"^/parallel-test\b"), parallel_test))
    app.add_handler(MessageHandler(filters.Regex(r"^/parallel-status\b"), parallel_status))
    app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, request))
    app.add_handler(MessageHandler(filters.Document.ALL, document_request))
    app.add_handler(MessageHandler(filters.ATTACHMENT & ~filters.Document.ALL, unsupported))
    app.add_handler(CallbackQueryHandler(confirmation, pattern=CONFIRM_PATTERN))
    app.add_error_handler(error_handler)
    return app


@contextlib.asynccontextmanager
async def serving(app: Application, config: BotConfig) -> AsyncIterator[Application]:
    """Serve updates (polling or webhook) while the block runs; unfinished jobs resume first."""
    runner: JobRunner = app.bot_data["runner"]
    async with app:
        await app.bot.set_my_commands([BotCommand(n, d) for n, d in COMMANDS.items()])
        if not app.bot_data["allowed"]:
            log.warning("TELEGRAM_ALLOWED_USER_IDS is empty: the bot serves nobody")
        resumed = runner.resume()
        log.info("bot @%s up; %d unfinished job(s) resumed", app.bot.username, resumed)
        assert app.updater is not None
        if config.webhook_url:
            assert config.webhook_secret, "BotConfig refuses webhook mode without a secret"
            await app.updater.start_webhook(
                listen=config.webhook_listen,
                port=config.webhook_port,
                url_path="telegram",
                webhook_url=config.webhook_url,
                secret_token=config.webhook_secret,
            )
        else:
            await app.updater.start_polling(timeout=config.poll_timeout_s)
        await app.start()
        try:
            yield app
        finally:
            await app.updater.stop()
            await runner.close()
            await app.stop()


class _RedactingFormatter(logging.Formatter):
    """Never let the bot token reach a log (httpx and tracebacks carry request URLs)."""

    def __init__(self, secret: str, fmt_: str) -> None:
        super().__init__(fmt_)
        self._secret = secret

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text.replace(self._secret, "<token>") if self._secret else text


def _configure_logging(secret: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _RedactingFormatter(secret, "%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request, URL included


async def _serve_until_signalled(app: Application, config: BotConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with serving(app, config):
        await stop.wait()
    log.info("bot stopped")


def main() -> int:
    """Run the bot until SIGINT/SIGTERM; settings come from the environment."""
    try:
        settings = load_settings()
    except ConfigurationError as exc:  # one line; logging needs the token, so not yet
        print(f"bot: {exc}", file=sys.stderr)
        return 2
    token = settings.telegram_bot_token
    _configure_logging(token.get_secret_value() if token else "")
    if token is None:
        log.error("TELEGRAM_BOT_TOKEN is not set; the bot does not run")
        return 2
    try:
        config = BotConfig.from_env()
        home_lock.hold(settings.home, home_lock.BOT_LOCK)  # one bot per home, for its lifetime
    except ConfigurationError as exc:
        log.error("%s", exc)
        return 2
    init_ray()
    system = find_system()
    if system is None:
        log.info("no running system found; starting one (detached, it outlives the bot)")
        system = start_system(settings.for_actors(), detached=True)
    store = JobStore.in_home(settings.home)
    try:
        asyncio.run(
            _serve_until_signalled(build_application(settings, system, store, config), config)
        )
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
