"""A dead letter is stored whatever it holds: it is ingest's last place for a message."""

from __future__ import annotations

from zhizao.storage.connection import Conn
from zhizao.storage.deadletters import DeadLetterRow, list_dead_letters, write_dead_letters

T0 = 1_767_225_600_000


async def test_a_dead_letter_with_text_postgresql_cannot_hold_is_stored_escaped(
    conn: Conn,
) -> None:
    payload = b'{"name": "a\\u0000b", "raw": "\\ud800"}\x00\xff'
    row = DeadLetterRow(
        topic="zhizao/v1/X/edge/e\x00\x1b[2J/data",
        reason="contract: points.1.a\x00: Extra inputs; 'utf-8' codec can't encode '\ud800'",
        payload=payload,
        received_ms=T0,
        enterprise="9133\x00",
        edge_id="e\udc00",
        seq=2**63,  # beyond bigint: left out, the payload keeps it
        point_index=2**31,
    )
    async with conn.transaction():
        assert await write_dead_letters(conn, [row]) == 1
    [stored] = await list_dead_letters(conn)
    assert stored.topic == "zhizao/v1/X/edge/e\\x00\\x1b[2J/data"
    assert stored.reason == (
        "contract: points.1.a\\x00: Extra inputs; 'utf-8' codec can't encode '\\ud800'"
    )
    assert (stored.enterprise, stored.edge_id) == ("9133\\x00", "e\\udc00")
    assert (stored.seq, stored.point_index) == (None, None)
    assert stored.payload == payload  # bytes as received, NULs and all
    # Ordinary text, including Chinese and line breaks in a payload, is left alone.
    async with conn.transaction():
        await write_dead_letters(
            conn, [DeadLetterRow("zhizao/v1/X/edge/e/data", "device: '设备-1'", b"\n", T0,
                                 "X", "e", 2**63 - 1, 0)]
        )
    stored = (await list_dead_letters(conn))[1]
    assert (stored.reason, stored.seq, stored.point_index) == ("device: '设备-1'", 2**63 - 1, 0)
