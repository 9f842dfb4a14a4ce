"""One request to an OpenAI-compatible chat-completions endpoint, parsed defensively.

The image goes as a JPEG base64 data URL in an `image_url` content part, beside a text
part carrying the smoothed emotion and VA, so the model adds context instead of
re-classifying. Replies are read up to a size cap and within `timeout_s` of wall-clock
time for the whole reply (not just per read), and accepted only when they carry
`choices[0].message.content`; HTML error pages, non-JSON and missing fields become a
`VlmError` with a short reason. TLS certificates are always verified.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import requests

from appliance.common.http import Deadline, DeadlineSession
from appliance.common.redact import redact, redact_text
from appliance.config.schema import VlmConfig

log = logging.getLogger(__name__)
MAX_REPLY_BYTES = 64 * 1024
JPEG_QUALITY = 85
MAX_TOKENS = 96  # one short sentence
TEMPERATURE = 0.2
REASONING_MAX_TOKENS = 2048  # hidden reasoning + the sentence; a cap, not a charge
SAMPLING_PARAMETERS = ("max_tokens", "temperature")


class VlmError(RuntimeError):
    """A request failed: unreachable, timed out, refused, or an unusable reply."""


@dataclass(frozen=True)
class VlmReply:
    text: str
    latency_ms: float
    model: str


def completions_url(endpoint: str) -> str:
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/chat/completions") else f"{endpoint}/chat/completions"


def encode_image(image: np.ndarray, max_side: int) -> str:
    """Downscale so the longer side is <= max_side, JPEG, base64 data URL."""
    height, width = image.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise VlmError("could not encode the image as JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(jpeg.tobytes()).decode("ascii")


def build_request(
    settings: VlmConfig, image_url: str, context: dict, *, reasoning: bool = False
) -> dict:
    """The chat-completions request body (one user message: text + image).

    `reasoning`: the form OpenAI's reasoning models (o-series, gpt-5) accept. They refuse
    `max_tokens` and any non-default `temperature` with HTTP 400, and their hidden
    reasoning counts against `max_completion_tokens`, so that budget is larger.
    """
    body: dict[str, Any] = {
        "model": settings.model,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": settings.prompt.format_map(context)},
                    {"type": "image_url", "image_url": {"url": image_url}},
                ],
            }
        ],
    }
    if reasoning:
        body["max_completion_tokens"] = REASONING_MAX_TOKENS
    else:
        body["max_tokens"] = MAX_TOKENS
        body["temperature"] = TEMPERATURE
    return body


def refuses_sampling_parameters(status: int, body: bytes) -> bool:
    """Is this OpenAI's 400 for `max_tokens` or `temperature` on a reasoning model?

    {"error": {"message": "Unsupported parameter: 'max_tokens' is not supported with
    this model. Use 'max_completion_tokens' instead.", "param": "max_tokens", "code":
    "unsupported_parameter"}}, and the same with "param": "temperature" and "code":
    "unsupported_value" once max_tokens is gone.
    """
    if status != 400:
        return False
    try:
        error = json.loads(body).get("error")
    except (ValueError, UnicodeDecodeError, AttributeError):
        return False
    if not isinstance(error, dict):
        return False
    message = str(error.get("message") or "")
    return error.get("param") in SAMPLING_PARAMETERS or (
        "max_completion_tokens" in message
        or any(f"Unsupported {what}: '{name}'" in message
               for what in ("parameter", "value") for name in SAMPLING_PARAMETERS)
    )  # fmt: skip


def parse_reply(body: bytes, max_chars: int) -> str:
    """choices[0].message.content as one trimmed line of at most max_chars."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise VlmError(f"reply is not JSON: {body[:60]!r}") from None
    try:
        content = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise VlmError("reply lacks choices[0].message.content") from None
    if isinstance(content, list):  # some servers return content parts
        content = " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    if not isinstance(content, str) or not content.strip():
        if data["choices"][0].get("finish_reason") == "length":
            raise VlmError("reply content is empty: the model used its whole token budget")
        raise VlmError("reply content is empty")
    text = " ".join(content.split())
    return text if len(text) <= max_chars else text[: max_chars - 1].rstrip() + "…"


class VlmClient:
    def __init__(self, settings: VlmConfig, api_key: str | None = None) -> None:
        self.settings = settings
        self.url = completions_url(settings.endpoint)
        # no hidden retries (the worker decides); every request ends within timeout_s
        self.session = DeadlineSession(settings.timeout_s)
        self.session.verify = True
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self._secrets = [api_key] if api_key else []
        self.reasoning = False  # set once the endpoint refuses max_tokens/temperature

    def describe(self, image: np.ndarray, context: dict) -> VlmReply:
        image_url = encode_image(image, self.settings.max_image_side)
        started = time.monotonic()
        status, kind, data = self._post(
            build_request(self.settings, image_url, context, reasoning=self.reasoning)
        )
        if not self.reasoning and refuses_sampling_parameters(status, data):
            # One retry in the reasoning models' form, kept for every later request: a
            # reasoning model refuses max_tokens on every request, not just this one.
            log.warning(
                "VLM %s refuses max_tokens/temperature (a reasoning model?): sending "
                "max_completion_tokens and no temperature from now on",
                self.settings.model,
            )
            self.reasoning = True
            status, kind, data = self._post(
                build_request(self.settings, image_url, context, reasoning=True)
            )
            if refuses_sampling_parameters(status, data):
                self.reasoning = False  # it refuses that form too: back to the usual one
        if status != 200:
            # a server may echo the request: the key and the endpoint's credentials are
            # masked before the reply is cut short (a cut secret would no longer match)
            said = redact_text(data[:4096].decode("utf-8", "replace"), self._secrets)
            raise VlmError(f"HTTP {status} ({kind}): {said[:80]!r}")
        text = parse_reply(data, self.settings.max_reply_chars)
        return VlmReply(text, (time.monotonic() - started) * 1e3, self.settings.model)

    def _post(self, body: dict) -> tuple[int, str, bytes]:
        """One POST: (status, content type, body), all of it within timeout_s: connect,
        headers and body together (appliance.common.http), however slowly they come."""
        seconds = self.settings.timeout_s
        try:
            with (
                Deadline(seconds) as deadline,
                self.session.post(
                    self.url,
                    json=body,
                    headers=self.headers,
                    stream=True,
                    allow_redirects=False,  # a 307/308 would re-send the picture elsewhere
                ) as response,
            ):
                if response.is_redirect:
                    where = redact(response.headers.get("Location", "?"))
                    raise VlmError(
                        f"HTTP {response.status_code} redirect to {where[:120]}: not "
                        "followed (the picture goes only to vlm.endpoint); set the "
                        "endpoint to it"
                    )
                data = _read_capped(response)
                kind = response.headers.get("Content-Type", "?").split(";")[0]
        except requests.RequestException as exc:
            if deadline.expired.is_set() or isinstance(exc, requests.Timeout):
                raise VlmError(_late(seconds)) from None
            raise VlmError(f"unreachable: {exc.__class__.__name__}") from exc
        if deadline.expired.is_set():  # cut short: what came may look complete
            raise VlmError(_late(seconds))
        return response.status_code, kind, data

    def close(self) -> None:
        self.session.close()


def _late(timeout_s: float) -> str:
    return f"no complete reply within {timeout_s:.0f} s (connect, headers and body)"


def _read_capped(response: requests.Response) -> bytes:
    """The body, refusing more than MAX_REPLY_BYTES."""
    chunks, size = [], 0
    for chunk in response.iter_content(8192):
        size += len(chunk)
        if size > MAX_REPLY_BYTES:
            raise VlmError(f"reply larger than {MAX_REPLY_BYTES // 1024} KB")
        chunks.append(chunk)
    return b"".join(chunks)
