"""The Telegram front end's parts (``bot.py`` is its entry point): the job store (``jobs``),
the job runner that submits and delivers (``runner``), progress in words (``progress``) and
Markdown to Telegram entities (``telegram_format``)."""
