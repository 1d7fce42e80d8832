"""The one condenser of RDKit's messages (``chem.rdkit_log.rdkit_reason``): typical failures give one line without
stack frames, whether RDKit logged them or raised them, and every reader that reports RDKit's reason uses it."""

import pytest

from molediff.chem.rdkit_log import _split_messages, rdkit_errors, rdkit_reason


def _logged(smiles: str) -> list[str]:
    from rdkit import Chem

    with rdkit_errors() as messages:
        assert Chem.MolFromSmiles(smiles) is None
    return messages


@pytest.mark.parametrize("smiles, expected", [
    ("C(C)(C)(C)(C)C", "Explicit valence for atom # 0 C, 5, is greater than permitted"),         # valence
    ("c1cccc1", "Can't kekulize mol.  Unkekulized atoms: 0 1 2 3 4"),                             # kekulisation
])
def test_a_logged_sanitisation_failure_is_its_message(smiles, expected):
    assert rdkit_reason(_logged(smiles), echo=smiles) == expected


def test_a_parse_error_drops_rdkit_prefixes_the_echoed_input_and_the_caret_line():
    messages = _logged("C1CC(")
    assert any(m.startswith("SMILES Parse Error") for m in messages) and "C1CC(" in messages  # what RDKit logs
    reason = rdkit_reason(messages, echo="C1CC(")
    assert reason.startswith("syntax error while parsing: C1CC(") and "check for mistakes around position" in reason
    assert "SMILES Parse Error" not in reason and "~" not in reason and "^" not in reason
    assert "Failed parsing SMILES" not in reason and "\n" not in reason


def test_an_invariant_violation_keeps_what_went_wrong_and_no_stack_frames():
    # as RDKit's Python wrapper raises it (its RuntimeError text)
    raised = RuntimeError("Invariant Violation\n\tbad direction in linearSearch\n\tViolation occurred on line 234 in "
                          "file Code/Numerics/Optimizer/LinearSearch.h\n\tFailed Expression: sum > 0\n\tRDKIT: "
                          "2026.09.1\n\tBOOST: 1_85\n")
    assert rdkit_reason(raised) == "Invariant Violation: bad direction in linearSearch"
    from rdkit import Chem

    with pytest.raises(RuntimeError) as range_error:
        Chem.MolFromSmiles("CCO").GetAtomWithIdx(99)
    assert rdkit_reason(range_error.value) == "Range Error"
    # the same report as RDKit logs it, with the stack trace its debug builds append
    logged = _split_messages("[12:00:00] \n\n****\nInvariant Violation\nbad direction in linearSearch\n"
                             "Violation occurred on line 234 in file LinearSearch.h\nFailed Expression: sum > 0\n"
                             "****\n\nStacktrace:\n 0# 0x00007f RDKit::Invariant::Invariant()\n 1# main\n")
    reason = rdkit_reason(logged)
    assert reason.startswith("Invariant Violation: bad direction in linearSearch") and "\n" not in reason
    assert "#" not in reason and "Stacktrace" not in reason and "LinearSearch.h" not in reason


def test_exceptions_without_a_message_repeats_and_long_reasons():
    assert rdkit_reason(ValueError("")) == "ValueError"
    assert rdkit_reason(ValueError("first line\nsecond line")) == "first line"
    assert rdkit_reason(["same", "same", "other"]) == "same; other"
    assert rdkit_reason([]) == ""
    long = rdkit_reason(["x" * 500], limit=200)
    assert len(long) == 200 and long.endswith("...")


def test_every_caller_reports_through_the_one_condenser():
    """The SDF reader, the conformer inputs and the metrics all name ``rdkit_reason``; no copy of it is left."""
    from pathlib import Path

    import molediff

    root = Path(molediff.__file__).parent
    for module in ("chem/sdf.py", "chem/stability.py", "chem/physics.py", "conformers/io.py"):
        assert "rdkit_reason(" in (root / module).read_text(), module
    for path in root.rglob("*.py"):
        text = path.read_text()
        for old in ("def _rdkit_reason(", "def error_reason(", "def _summary(messages"):
            assert old not in text, f"{path.relative_to(root)} defines {old}"
