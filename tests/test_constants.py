"""The torch-free names the CLI offers agree with the modules that implement them."""

from simsearch import ann, constants, copies, model, preprocess


def test_cli_names_match_the_implementations():
    assert constants.OBJECTIVES == model.OBJECTIVES
    assert constants.INDEX_TYPES == ann.TYPES
    assert set(constants.FITS) == set(preprocess.FITS)
    assert constants.COPY_STRENGTHS == tuple(copies.STRENGTHS)


def test_cli_choices_are_the_constants():
    import click

    from simsearch.cli import cli

    choices = {
        (name, p.name): tuple(p.type.choices)
        for name, cmd in cli.commands.items()
        for p in cmd.params
        if isinstance(p.type, click.Choice)
    }
    assert choices[("index", "objective")] == choices[("train", "objective")] == constants.OBJECTIVES
    assert choices[("index", "fit")] == choices[("train", "fit")] == constants.FITS
    assert choices[("index", "index_type")] == constants.INDEX_TYPES
    assert choices[("eval", "strength")] == constants.COPY_STRENGTHS
    assert preprocess.FITS is constants.FITS and ann.AUTO_FLAT_MAX == constants.AUTO_FLAT_MAX
