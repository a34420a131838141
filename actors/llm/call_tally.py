"""One logical model call's bookkeeping across its attempts: paid answers, budgets, the cap."""

from __future__ import annotations

from anthropic.types import Message

from actors.config import Purpose
from actors.errors import ModelBehaviorError
from actors.llm.pricing import cache_saving_usd, cost_usd
from actors.models import Usage


class CallTally:
    """One logical call's bookkeeping across its attempts: paid answers, budgets, the cap."""

    __slots__ = ("budgets", "max_paid", "model", "purpose", "shape", "simulated", "usage")

    def __init__(self, purpose: Purpose, model: str, shape: str, max_paid: int | None) -> None:
        self.purpose = purpose
        self.model = model
        self.shape = shape  # "text" or the output type's name, for messages
        self.max_paid = max_paid  # answers this call may pay for (None: no cap)
        self.usage = Usage()  # every answer received, whatever became of it
        self.simulated = False
        self.budgets: list[int] = []  # max_tokens of earlier cut attempts

    def paid(self, message: Message, simulated: bool) -> Usage:
        """Count one answer received (paid for, usable or not) and return its usage."""
        used = message.usage
        written = used.cache_creation_input_tokens or 0
        read = used.cache_read_input_tokens or 0
        spent = Usage(
            requests=1,
            input_tokens=used.input_tokens,
            output_tokens=used.output_tokens,
            cache_write_tokens=written,
            cache_read_tokens=read,
            cost_usd=cost_usd(
                message.model,
                used.input_tokens,
                used.output_tokens,
                cache_write_tokens=written,
                cache_read_tokens=read,
            ),
            cache_saved_usd=cache_saving_usd(message.model, written, read),
        )
        self.usage = self.usage + spent
        self.simulated = self.simulated or simulated
        return spent

    def check_paid_cap(self) -> None:
        """Refuse another attempt once the caller's cap on paid answers is reached."""
        if self.max_paid is not None and self.usage.requests >= self.max_paid:
            raise ModelBehaviorError(
                f"{self.model}: no usable {self.shape} answer within the cap of "
                f"{self.max_paid} paid calls (PARALLEL_AGENTS_MAX_PAID_CALLS_PER_MICROTASK)",
                usage=self.usage,
            )

    def budgets_text(self, last: int) -> str:
        return " then ".join(str(b) for b in [*self.budgets, last])
