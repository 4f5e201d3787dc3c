"""The rule language: what parses, each class of error with its message, batch equals row by row."""

import numpy as np
import pandas as pd
import pytest

from schemewatch import features
from schemewatch.rule_language import (
    MAX_DEPTH,
    MAX_LENGTH,
    NAMES,
    TEXT,
    RuleError,
    evaluate,
    evaluate_row,
    parse,
)


@pytest.mark.parametrize(
    "expression, names",
    [
        ('km_from_home > 500 and scheme == "OLD_AGE_PENSION"', ("km_from_home", "scheme")),
        ("amount >= 2 * 2000 or amount_to_entitlement > 1.5", ("amount", "amount_to_entitlement")),
        ("scheme in ('PM_KISAN', \"MGNREGA\")", ("scheme",)),
        ('channel not in ("CASH") and not (hour < 6 or hour >= 22)', ("channel", "hour")),
        ("-amount < -1e3", ("amount",)),
        ("(amount - 1000) / 2 != 0.5", ("amount",)),
        ('agent_id == "" and account_id != ""', ("account_id", "agent_id")),
    ],
)
def test_valid_expressions_parse_and_name_what_they_read(expression, names):
    assert parse(expression).names == names


def test_every_feature_name_and_documented_field_can_be_used():
    for name in features.FEATURE_NAMES:
        assert parse(f"{name} > 0").names == (name,)
    for field in ("scheme", "channel", "state", "district", "instalment_period", "agent_id"):
        assert parse(f'{field} == "x"').names == (field,)
    for field in ("amount", "hour", "latitude", "longitude"):
        assert parse(f"{field} >= 0").names == (field,)


@pytest.mark.parametrize(
    "expression, message",
    [
        (
            "km_form_home > 500",
            "unknown name 'km_form_home' at column 1; did you mean 'km_from_home'?",
        ),
        (
            'scheme == "X" and amout > 1',
            "unknown name 'amout' at column 19; did you mean 'amount'?",
        ),
        ("__import__('os')", "unknown name '__import__' at column 1"),
        ("open('/etc/passwd')", "unknown name 'open' at column 1"),
        ("amount > 1 amount", "unexpected 'amount' at column 12"),
        ("(amount > 1", "expected ')' to close the '(' at column 1, found end of the expression"),
        ("amount >", "expected a value at column 9, found end of the expression"),
        ("amount = 1", "use '==' to compare, at column 8"),
        ("amount > 1 && hour < 3", "use 'and' instead of '&' at column 12"),
        ("amount > 1 ; hour", "unexpected character ';' at column 12"),
        ('scheme == "PM_KISAN', "text starting at column 11 is not closed"),
        ("amount.real > 1", "unexpected character '.' at column 7"),
        ("amount > 1 if 1 else 0", "unexpected 'if' at column 12"),
        ("[amount for x in y]", "unexpected character '[' at column 1"),
        ("lambda: 1", "unexpected character ':' at column 7"),
    ],
)
def test_bad_syntax_and_unknown_names_say_where(expression, message):
    with pytest.raises(RuleError) as raised:
        parse(expression)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    "expression, message",
    [
        ('amount > "500"', "type mismatch: '>' at column 8 compares a number with a text"),
        ("scheme == 3", "type mismatch: '==' at column 8 compares a text with a number"),
        ('scheme < "P"', "texts can only be compared with ==, != or in"),
        ('scheme in ("A", 2)', "type mismatch at column 17: the list after 'in' must hold texts"),
        ("amount in (1, 'x')", "the list after 'in' must hold numbers like its left side"),
        ("scheme + 1 > 2", "'+' at column 8 needs a number, but the part at column 1 is a text"),
        ("amount and hour > 1", "'and' at column 8 needs a condition"),
        ("not amount", "'not' at column 1 needs a condition"),
        ("amount * 2", "the rule must be a condition"),
        ('"PM_KISAN"', "the rule must be a condition"),
        ("(amount > 1) == (hour > 1)", "compares numbers or texts, not conditions"),
    ],
)
def test_type_mismatches_are_refused_with_their_column(expression, message):
    with pytest.raises(RuleError) as raised:
        parse(expression)
    assert message in str(raised.value)


def test_length_and_depth_are_bounded():
    with pytest.raises(RuleError, match=f"at most {MAX_LENGTH}"):
        parse("amount > 1 or " * 40 + "amount > 1")
    with pytest.raises(RuleError, match=f"deeper than {MAX_DEPTH} levels"):
        parse("(" * (MAX_DEPTH + 1) + "amount > 1" + ")" * (MAX_DEPTH + 1))
    with pytest.raises(RuleError, match="deeper than"):
        parse("not " * (MAX_DEPTH + 1) + "amount > 1")
    with pytest.raises(RuleError, match="empty"):
        parse("   ")


def test_the_evaluator_never_reaches_python_eval(monkeypatch):
    import builtins

    def refuse(*args, **kwargs):
        raise AssertionError("eval/exec called")

    monkeypatch.setattr(builtins, "eval", refuse)
    monkeypatch.setattr(builtins, "exec", refuse)
    parsed = parse('amount > 1 and scheme == "A"')
    columns = {"amount": np.array([0.0, 2.0]), "scheme": np.array(["A", "A"], dtype=object)}
    assert evaluate(parsed, columns, 2).tolist() == [False, True]


def _frame(rows: int, seed: int) -> dict[str, np.ndarray]:
    """Hand-built columns: numbers with zeros, NaN and ties; texts with blanks."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, kind in NAMES.items():
        if kind == TEXT:
            out[name] = rng.choice(["A", "B", "PM_KISAN", ""], rows).astype(object)
        else:
            values = rng.choice([-2.0, 0.0, 0.5, 1.0, 3.0, 500.0, 1200.0, np.nan], rows)
            out[name] = values.astype(float)
    return out


EXPRESSIONS = [
    'km_from_home > 500 and scheme == "PM_KISAN"',
    "amount / hour > 1 or not amount_to_entitlement <= 0.5",
    'scheme in ("A", "") and channel not in ("B")',
    "-(amount - 3) * 2 >= km_from_home + 1",
    "amount != 1 and hour == 0",
    "amount in (0, 1.0, -2) or not (hour != 3)",
    'not (state == "A" or district != "B") and latitude < longitude / hour',
    "amount / 0 != 1 or amount / 0 == 1",
]


@pytest.mark.parametrize("expression", EXPRESSIONS)
@pytest.mark.parametrize("seed", [1, 2])
def test_vectorised_evaluation_equals_the_row_by_row_reference(expression, seed):
    parsed = parse(expression)
    columns = _frame(400, seed)
    batch = evaluate(parsed, {n: columns[n] for n in parsed.names}, 400)
    rows = pd.DataFrame(columns).to_dict("records")
    assert batch.tolist() == [evaluate_row(parsed, row) for row in rows]
    assert 0 < batch.sum() < 400 or expression.endswith("== 1")
