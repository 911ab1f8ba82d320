"""Label set integrity: the data every prompt, plot and evaluation relies on."""
import json

import pytest

from mikupal import taxonomy
from mikupal.taxonomy import TaxonomyError, load_label_set, map_label

COWEN26 = ["Admiration", "Adoration", "Aesthetic", "Amusement", "Anger", "Anxiety", "Awe", "Awkwardness",
           "Boredom", "Calmness", "Confusion", "Craving", "Disgust", "Empathic pain", "Entrancement",
           "Excitement", "Fear", "Horror", "Interest", "Joy", "Romance/Love", "Nostalgia", "Relief",
           "Sadness", "Satisfaction", "Surprise"]


def test_builtin_sets_are_listed():
    assert set(taxonomy.list_label_sets()) >= {"cowen26", "meld7", "iemocap4", "iemocap9", "ekman6"}


def test_cowen26_has_exactly_the_26_categories():
    assert load_label_set("cowen26").names == COWEN26


@pytest.mark.parametrize("name,expected", [
    ("meld7", {"anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"}),
    ("iemocap4", {"angry", "happy", "neutral", "sad"}),
    ("iemocap9", {"angry", "happy", "excited", "sad", "frustrated", "fearful", "surprised", "disgusted", "neutral"}),
    ("ekman6", {"anger", "disgust", "fear", "happiness", "sadness", "surprise"}),
])
def test_other_sets_have_their_labels(name, expected):
    assert set(load_label_set(name).names) == expected


@pytest.mark.parametrize("name", ["cowen26", "meld7", "iemocap4", "iemocap9", "ekman6"])
def test_names_unique_descriptions_and_colours(name):
    ls = load_label_set(name)
    assert len({n.casefold() for n in ls.names}) == len(ls.names)
    for c in ls.categories:
        assert len(c.description.split()) >= 6, c.name
        assert c.color.startswith("#") and len(c.color) == 7
    assert len(set(ls.colors.values())) == len(ls.names), "colours must tell categories apart"


@pytest.mark.parametrize("target", ["meld7", "iemocap4", "iemocap9", "ekman6"])
def test_cowen26_mappings_total_and_onto_valid_names(target):
    src, dst = load_label_set("cowen26"), load_label_set(target)
    m = src.mappings[target]
    assert sorted(m.map) == sorted(src.names)
    assert set(m.map.values()) <= set(dst.names)
    assert m.notes
    for cat in src.names:
        assert map_label(cat, {cat: 0.9}, "cowen26", target) in dst.names


def test_iemocap_codes_resolve():
    assert load_label_set("iemocap4").canonical("exc") == "happy"
    assert load_label_set("iemocap9").canonical("FRU") == "frustrated"
    assert load_label_set("iemocap9").canonical("oth") is None


def test_neutral_rule_is_explicit_and_configurable():
    weak = {c: 0.1 for c in COWEN26}
    weak["Joy"] = 0.2
    assert map_label("Joy", weak, "cowen26", "meld7") == "neutral"  # below the 0.3 default
    assert map_label("Joy", weak, "cowen26", "meld7", neutral_below=0.0) == "joy"  # rule disabled
    assert map_label("Joy", {"Joy": 0.8}, "cowen26", "meld7") == "joy"
    assert map_label("Calmness", {"Calmness": 0.8}, "cowen26", "iemocap4") == "neutral"
    assert map_label("Excitement", {"Excitement": 0.9}, "cowen26", "iemocap4") == "happy"
    assert map_label("Excitement", {"Excitement": 0.9}, "cowen26", "iemocap9") == "excited"
    # ekman6 has no neutral: a weak answer still maps through the table
    assert map_label("Joy", weak, "cowen26", "ekman6") == "happiness"
    assert map_label("joy", None, "cowen26", "cowen26") == "Joy"


def test_map_label_errors_are_clear():
    with pytest.raises(TaxonomyError, match="not a category"):
        map_label("Happiness", {}, "cowen26", "meld7")
    with pytest.raises(TaxonomyError, match="no mapping"):
        map_label("joy", {}, "meld7", "iemocap4")


def test_user_file_loads_json_and_toml(tmp_path):
    p = tmp_path / "valence.json"
    p.write_text(json.dumps({
        "name": "valence3",
        "categories": [
            {"name": "positive", "description": "Pleasant feeling of any kind.", "color": "#00aa00"},
            {"name": "negative", "description": "Unpleasant feeling of any kind.", "color": "#aa0000"},
            {"name": "neutral", "description": "No clear feeling.", "color": "#888888"},
        ],
        "mappings": {"meld7": {"map": {"positive": "joy", "negative": "sadness", "neutral": "neutral"},
                               "neutral": {"label": "neutral", "below": 0.5}}},
    }))
    ls = load_label_set(str(p))
    assert ls.name == "valence3" and ls.names == ["positive", "negative", "neutral"]
    assert map_label("negative", {"negative": 0.9}, str(p), "meld7") == "sadness"
    assert map_label("negative", {"negative": 0.4}, ls, "meld7") == "neutral"
    t = tmp_path / "two.toml"
    t.write_text('name = "two"\n[[categories]]\nname = "a"\ndescription = "first"\ncolor = "#000000"\n'
                 '[[categories]]\nname = "b"\ndescription = "second"\ncolor = "#FFFFFF"\n')
    assert load_label_set(t).names == ["a", "b"]


@pytest.mark.parametrize("content,match", [
    ("{not json", "not valid JSON"),
    ('{"name": "x", "categories": [{"name": "a", "description": "d", "color": "#000000"},'
     ' {"name": "A", "description": "d", "color": "#000001"}]}', "appears twice"),
    ('{"name": "x", "categories": [{"name": "a", "description": "", "color": "#000000"},'
     ' {"name": "b", "description": "d", "color": "#000001"}]}', "no 'description'"),
    ('{"name": "x", "categories": [{"name": "a", "description": "d", "color": "red"},'
     ' {"name": "b", "description": "d", "color": "#000001"}]}', "#RRGGBB"),
    ('{"name": "x", "categories": [{"name": "a", "description": "d", "color": "#000000"},'
     ' {"name": "b", "description": "d", "color": "#000001"}], "mappings": {"meld7": {"map": {"a": "joy"}}}}',
     "missing \\['b'\\]"),
])
def test_bad_file_gives_clear_error(tmp_path, content, match):
    p = tmp_path / "bad.json"
    p.write_text(content)
    with pytest.raises(TaxonomyError, match=match) as ei:
        load_label_set(str(p))
    assert str(p) in str(ei.value)


def test_unknown_name_lists_choices(tmp_path):
    with pytest.raises(TaxonomyError, match="cowen26"):
        load_label_set("cowen27")
    with pytest.raises(TaxonomyError, match="does not exist"):
        load_label_set(str(tmp_path / "nope.json"))


@pytest.mark.parametrize("name", ["cowen26", "meld7", "iemocap4", "iemocap9", "ekman6"])
def test_builtin_sets_place_every_category_in_the_circumplex(name):
    ls = load_label_set(name)
    assert all(-1 <= c.va[0] <= 1 and 0 <= c.va[1] <= 1 for c in ls.categories), [(c.name, c.va) for c in ls.categories]
    # Russell's circumplex: anger and sadness are unpleasant, joy pleasant; anger is the more aroused
    va = {c.name.lower()[:3]: c.va for c in ls.categories}
    joy = va.get("joy", va.get("hap"))
    assert va["ang"][0] < 0 and va["sad"][0] < 0 < joy[0] and va["ang"][1] > va["sad"][1]
    assert len({c.va for c in ls.categories}) == len(ls.names), "two categories at one point cannot be told apart"
