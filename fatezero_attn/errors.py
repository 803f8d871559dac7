"""The pack's one error type, kept apart so nodes can raise it without importing ComfyUI's model code."""


class FateZeroError(ValueError):
    """A user-facing error: the message names the node, the input and the fix."""
