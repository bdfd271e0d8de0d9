import pytest

from prectr.encoder.student import save_student
from prectr.text.student_files import piece_limits, student_tokenizer
from prectr.text.tokenizer import TextTokenizer
from tests.encoder.conftest import tiny_student

TEXTS = ["red cotton chair", "blue leather sofa", "red leather chairs", "oak table"] * 5


def test_the_students_own_piece_limits_are_read_not_its_tokenizers(tmp_path) -> None:
    tokenizer = TextTokenizer.train(TEXTS, TEXTS, vocab_size=300, min_frequency=1)
    student = tiny_student(tokenizer.vocab_size)  # built with 6 query and 16 title pieces
    assert (tokenizer.query_length, tokenizer.title_length) != (6, 16)
    save_student(tmp_path, student, tokenizer)
    assert piece_limits(tmp_path) == (6, 16)
    assert student_tokenizer(tmp_path).encode(["red sofa"], 4).tolist() == (
        tokenizer.encode(["red sofa"], 4).tolist()
    )


def test_a_directory_without_a_student_is_refused_naming_what_writes_one(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no student \(student.pt missing; run `prectr"):
        piece_limits(tmp_path)
