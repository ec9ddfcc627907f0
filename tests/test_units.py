import pytest

from optimizer.errors import InputError
from optimizer.units import parse_bytes, parse_tokens


@pytest.mark.parametrize("text,expected", [("393216", 393216), ("384K", 393216), ("384k", 393216),
                                           ("1M", 1048576), ("128K", 131072), (4096, 4096), ("1.5K", 1536)])
def test_parse_tokens(text, expected):
    assert parse_tokens(text) == expected


@pytest.mark.parametrize("bad", ["-5", "0", "abc", "384KB", "1.3K", "99999999999"])
def test_parse_tokens_rejects(bad):
    with pytest.raises(InputError):
        parse_tokens(bad)


def test_parse_bytes_decimal_vs_binary():
    assert parse_bytes("256GB") == 256 * 10**9
    assert parse_bytes("256GiB") == 256 * 2**30
    assert parse_bytes("1.5TB") == 1_500_000_000_000
    with pytest.raises(InputError):
        parse_bytes("12 parsecs")
