"""Search spaces: sampling, conditional family blocks, merge dimensions, list choices, grids, and
errors that name the key."""

import json

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from kwsearch.models import parse_model_config
from kwsearch.nn import family_names
from kwsearch.search.space import Dimension, Space, SpaceError

BASE = {"backbone": "resnet18_cifar", "num_classes": 4, "in_chans": 1, "input_size": [12, 12]}


def space(**tree):
    return Space({**BASE, **tree}, "space.yaml", family_names())


def conditional():
    return space(
        width={"choice": [0.0625, 0.125]},
        conv={
            "family": {"choice": ["static", "kw"]},
            "kw": {
                "cell_num_ratio": {"choice": [1, 2]},
                "sharing_range": {"choice": [["layer", "conv"], ["conv"]]},
            },
            "odconv": {"kernel_num": {"int": [1, 4]}},
        },
    )


def picking(**raw):
    """A suggest function that answers from ``raw`` (by dimension name) and records the names."""
    asked = []

    def suggest(dimension: Dimension):
        asked.append(dimension.name)
        return raw[dimension.name] if dimension.name in raw else dimension.lowest()

    return suggest, asked


def test_every_branch_is_parsed_up_front_and_named_by_its_path():
    dims = conditional().dimensions
    assert set(dims) == {
        "width",
        "conv.family",
        "conv.kw.cell_num_ratio",
        "conv.kw.sharing_range",
        "conv.odconv.kernel_num",
    }
    assert isinstance(dims["conv.odconv.kernel_num"].distribution, IntDistribution)
    assert dims["conv.kw.sharing_range"].distribution.choices == ('["layer","conv"]', '["conv"]')


def test_family_options_are_sampled_only_when_that_family_is_chosen():
    suggest, asked = picking(**{"conv.family": "static"})
    config, raw = conditional().sample(suggest)
    assert config["conv"] == {"family": "static"}
    assert asked == ["width", "conv.family"]
    assert raw == {"width": 0.0625, "conv.family": "static"}

    suggest, asked = picking(**{"conv.family": "kw", "conv.kw.sharing_range": '["conv"]', "width": 0.125})
    config, raw = conditional().sample(suggest)
    # options of the chosen family sit in the conv spec itself; no family block is left over
    assert config["conv"] == {"family": "kw", "cell_num_ratio": 1, "sharing_range": ["conv"]}
    assert config["width"] == 0.125
    assert "conv.odconv.kernel_num" not in asked
    assert raw["conv.kw.sharing_range"] == '["conv"]'  # Optuna stores a JSON label for lists
    parse_model_config(config)


def test_a_merge_dimension_sets_several_keys_at_once():
    s = space(
        conv={"family": "kw", "cell_num_ratio": 1},
        sharing={
            "merge": {
                "per_layer": {"conv": {"sharing_range": ["layer", "conv"]}, "width": 0.0625},
                "per_conv": {"conv": {"sharing_range": ["conv"]}, "width": {"choice": [0.0625, 0.125]}},
            }
        },
    )
    assert set(s.dimensions) == {"sharing", "width"}
    config, raw = s.sample(picking(sharing="per_layer")[0])
    assert config["conv"] == {"family": "kw", "cell_num_ratio": 1, "sharing_range": ["layer", "conv"]}
    assert "sharing" not in config
    assert raw == {"sharing": "per_layer"}
    config, raw = s.sample(picking(sharing="per_conv", width=0.125)[0])
    assert config["conv"]["sharing_range"] == ["conv"]
    assert config["width"] == 0.125
    assert raw == {"sharing": "per_conv", "width": 0.125}


def test_labelled_choices_and_numeric_distributions():
    s = space(
        width={"choice": {"narrow": 0.0625, "wide": 0.125}},
        conv={
            "family": "kw",
            "cell_num_ratio": {"float": [0.5, 4], "log": True},
            "reduction": {"float": [0.0625, 0.25], "step": 0.0625},
        },
    )
    dims = s.dimensions
    assert dims["width"].distribution == CategoricalDistribution(["narrow", "wide"])
    assert dims["width"].decode("wide") == 0.125
    assert dims["conv.cell_num_ratio"].distribution == FloatDistribution(0.5, 4.0, log=True)
    assert dims["conv.reduction"].grid_values() == pytest.approx([0.0625, 0.125, 0.1875, 0.25])


def test_grid_enumerates_each_active_combination_once():
    grid = conditional().grid()
    # width (2) x (static + kw x ratio (2) x sharing (2)); odconv is never active
    assert len(grid) == 2 * (1 + 2 * 2)
    assert len({json.dumps(g, sort_keys=True) for g in grid}) == len(grid)
    assert sum(g["conv.family"] == "static" for g in grid) == 2
    assert all(set(g) == {"width", "conv.family"} for g in grid if g["conv.family"] == "static")
    ints = space(conv={"family": "odconv", "kernel_num": {"int": [1, 3]}}, width={"choice": [0.0625, 0.125]})
    assert len(ints.grid()) == 6


def test_a_grid_over_a_continuous_float_names_the_dimension():
    s = space(conv={"family": "kw", "cell_num_ratio": {"float": [0.5, 4]}})
    with pytest.raises(SpaceError, match=r"space\.yaml: conv\.cell_num_ratio: a grid needs"):
        s.grid()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"choice": [1, 2], "int": [1, 2]}, "exactly one of"),
        ({"int": [4, 1]}, "low 4 exceeds high 1"),
        ({"float": [0.0, 1.0], "log": True}, "log distribution needs low > 0"),
        ({"int": [1, 4], "steps": 2}, r"unknown option\(s\) steps"),
        ({"int": [1.5, 4]}, r"'int' takes \[low, high\]"),
        ({"int": [1, 4], "step": 0}, "'step' must be a positive int"),
        ({"float": [0.5, 4], "log": True, "step": 0.5}, "'log' and 'step' cannot be combined"),
        ({"choice": []}, "non-empty"),
        ({"choice": [1, 1]}, "lists a value twice"),
        ({"choice": [{"int": [1, 2]}]}, "give labels"),
    ],
)
def test_bad_distributions_name_the_file_and_key(value, message):
    with pytest.raises(SpaceError, match=rf"space\.yaml: conv\.kw\.cell_num_ratio: .*{message}"):
        space(conv={"family": {"choice": ["static", "kw"]}, "kw": {"cell_num_ratio": value}})


def test_a_bad_distribution_in_a_list_is_named_by_index():
    with pytest.raises(SpaceError, match=r"cell_num_ratio\[1\]: low 3 exceeds high 2"):
        space(conv={"family": "kw", "cell_num_ratio": [1, {"int": [3, 2]}]})


def test_a_space_must_be_a_mapping():
    with pytest.raises(SpaceError, match=r"space\.yaml: a space is a mapping"):
        Space([1, 2], "space.yaml")
