"""The torch-free names the CLI offers agree with the modules that implement them."""

from simsearch import ann, constants, copies, model, preprocess


def test_cli_names_match_the_implementations():
    assert constants.OBJECTIVES == model.OBJECTIVES
    assert constants.INDEX_TYPES == ann.TYPES
    assert set(constants.FITS) == set(preprocess.FITS)
    assert constants.COPY_STRENGTHS == tuple(copies.STRENGTHS)
