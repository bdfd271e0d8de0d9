from prectr.words import count


def test_counts_take_the_plural_unless_one():
    assert count(1, "problem") == "1 problem"
    assert count(0, "problem") == "0 problems"
    assert count(2, "query", "queries") == "2 queries"
    assert count(1, "query", "queries") == "1 query"
    assert count(12_345, "row") == "12,345 rows"
