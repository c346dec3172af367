"""Properties of the request parsers, over generated input: each either returns a value in its
range or refuses the input the documented way (None or ValidationError), never anything else."""

from __future__ import annotations

import re
import string
from datetime import UTC, date, datetime

from hypothesis import given
from hypothesis import strategies as st

from app.image_models import OPENAI, resolve_model
from app.library import GalleryFilters, decode_cursor, encode_cursor
from app.parsing import ID_MAX, IdConverter, json_problem, parse_id
from app.validation import ValidationError, parse_size

ids = st.integers(min_value=0, max_value=ID_MAX)
any_text = st.text(max_size=40)
GPT_IMAGE_2 = resolve_model("gpt-image-2", OPENAI)  # free sizes within a rule


@given(ids)
def test_every_id_written_in_ascii_parses_back(number):
    assert parse_id(str(number)) == number


@given(any_text)
def test_an_id_is_ascii_digits_up_to_the_largest_id_or_none(raw):
    parsed = parse_id(raw)

    if parsed is None:
        assert not (re.fullmatch(r"[0-9]{1,19}", raw) and int(raw) <= ID_MAX)
    else:
        assert raw.isascii() and raw.isdigit() and 0 <= parsed <= ID_MAX


@given(st.integers(min_value=ID_MAX + 1, max_value=10**40))
def test_ids_past_the_largest_are_refused(number):
    assert parse_id(str(number)) is None
    assert re.fullmatch(IdConverter.regex, str(number)) is None


@given(st.integers(min_value=0, max_value=10**25))
def test_the_route_pattern_matches_exactly_the_parsable_ids(number):
    assert bool(re.fullmatch(IdConverter.regex, str(number))) == (parse_id(str(number)) is not None)


aware_times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)


@given(aware_times, ids)
def test_a_cursor_decodes_to_what_was_encoded(moment, item_id):
    assert decode_cursor(encode_cursor(moment, item_id)) == (moment, item_id)


@given(st.one_of(any_text, st.text(alphabet=string.ascii_letters + string.digits + "-_")))
def test_any_cursor_text_decodes_to_utc_and_an_id_or_is_refused(raw):
    try:
        created, item_id = decode_cursor(raw)
    except ValidationError as error:
        assert error.field == "cursor"
    else:
        assert created.utcoffset() is not None and created.utcoffset().total_seconds() == 0
        assert 0 <= item_id <= ID_MAX


@given(st.datetimes(timezones=st.none()), ids)
def test_a_cursor_without_a_time_zone_is_refused(moment, item_id):
    try:
        decode_cursor(encode_cursor(moment, item_id))
    except ValidationError:
        return
    raise AssertionError("a naive cursor was accepted")


@given(st.one_of(st.dates().map(date.isoformat), any_text), st.dates().map(date.isoformat))
def test_gallery_dates_parse_or_are_refused(since, until):
    try:
        filters = GalleryFilters.from_args({"since": since, "until": until})
    except ValidationError as error:
        assert error.field in ("since", "until")
    else:
        assert filters.until == date.fromisoformat(until)
        assert filters.since is None or filters.since <= filters.until


sizes = st.one_of(
    any_text,
    st.builds(lambda w, h: f"{w}x{h}", st.integers(0, 10**6), st.integers(0, 10**6)),
    st.sampled_from(GPT_IMAGE_2.sizes),
)


@given(sizes)
def test_a_free_size_is_within_the_rule_or_refused(raw):
    assert GPT_IMAGE_2.size_rule is not None
    try:
        size = parse_size(raw, GPT_IMAGE_2)
    except ValidationError as error:
        assert error.field == "size"
        return
    if size in GPT_IMAGE_2.sizes:
        return
    width, height = (int(side) for side in size.split("x"))
    rule = GPT_IMAGE_2.size_rule
    assert width % rule.multiple == 0 and height % rule.multiple == 0
    assert max(width, height) <= rule.max_side
    assert max(width, height) <= rule.max_ratio * min(width, height)
    assert rule.min_pixels <= width * height <= rule.max_pixels


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=20,
)


@given(json_values)
def test_json_without_surrogates_and_shallow_is_accepted(value):
    problem = json_problem(value)

    assert problem is None or "nests" in problem


@given(st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1))
def test_json_with_a_lone_surrogate_anywhere_is_refused(surrogates):
    assert json_problem({"prompt": surrogates}) is not None
    assert json_problem({surrogates: 1}) is not None
    assert json_problem([[["ok", surrogates]]]) is not None
