"""``responses``: the public port's answers as bytes. Pure: no sockets, no event loop."""

from __future__ import annotations

from jwks_mirror import __version__
from jwks_mirror.serving.http.responses import DateClock, Responses, etag_matches, with_connection
from jwks_mirror.serving.state import Published

PUBLISHED = Published(body=b'{"keys":[]}', version="v1", etag='"v1"', kids=())
DATE = b"Date: Sat, 28 Nov 2026 10:00:00 GMT\r\n"


def test_etag_matching_rules():
    assert etag_matches('"a"', '"a"')
    assert etag_matches('W/"a"', '"a"')
    assert etag_matches(' "b" ,  "a"', '"a"')
    assert etag_matches(" * ", '"a"')
    assert not etag_matches('"ab"', '"a"')
    assert not etag_matches("", '"a"')


def test_the_three_answers_of_an_issuer_share_their_fields():
    responses = Responses(PUBLISHED, max_age=299, date=7, date_line=DATE)
    common = (
        b'ETag: "v1"\r\nCache-Control: public, max-age=299\r\n'
        + DATE
        + f"Server: jwks-mirror/{__version__}\r\n".encode()
    )
    assert responses.head == (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n"
        + common
        + b"\r\n"
    )
    assert responses.full == responses.head + b'{"keys":[]}'
    assert responses.not_modified == b"HTTP/1.1 304 Not Modified\r\n" + common + b"\r\n"
    assert (responses.etag, responses.max_age, responses.date) == (b'"v1"', 299, 7)


def test_a_connection_field_goes_at_the_end_of_the_head_not_into_the_body():
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nA\r\n\r\nB\r\n"
    assert with_connection(answer, b"close") == (
        b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nA\r\n\r\nB\r\n"
    )


def test_the_date_line_is_rebuilt_once_a_second():
    now = [1796205600.25]
    clock = DateClock(lambda: now[0])
    assert clock.date(clock.now()) == 1796205600
    line = clock.line
    assert line == b"Date: Wed, 02 Dec 2026 10:00:00 GMT\r\n"
    now[0] += 0.5
    assert clock.date(clock.now()) == 1796205600 and clock.line is line
    now[0] += 1
    assert clock.date(clock.now()) == 1796205601 and clock.line.endswith(b":01 GMT\r\n")
