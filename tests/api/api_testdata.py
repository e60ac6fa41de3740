"""Where the shared sample files are (../shared/data beside the clone), and a raw-HTTP
helper the upload tests share."""

import socket
from urllib.parse import urlsplit

from tests.shared_data import SHARED_DATA

DATA = SHARED_DATA


def announce_upload(url: str, authorization: str, declared: int, boundary: str) -> bytes:
    """What the API answers a multipart upload of `declared` bytes announced as curl does
    for large bodies (`Expect: 100-continue`), without sending a byte of the body: the
    raw answer, status line, headers and body."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(
            (
                f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                f"Authorization: {authorization}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                f"Content-Length: {declared}\r\nExpect: 100-continue\r\n\r\n"
            ).encode()
        )
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer
