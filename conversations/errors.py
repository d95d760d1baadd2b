"""ChatError: a refusal with a code clients can act on and a detail people can read.

Every surface turns it into its own shape (an ``error`` event on the WebSocket,
``{"code", "detail"}`` from the JSON API, OpenAI's error object on ``/v1``).
"""


class ChatError(Exception):
    def __init__(self, code: str, detail: str, status: int = 400):
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.status = status
