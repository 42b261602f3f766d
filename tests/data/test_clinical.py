"""Clinical encoding: layout, fitting on training rows only, unseen values, JSON round trip."""

import json

import numpy as np
import pandas as pd
import pytest

from dermnet.data.clinical import fit_clinical_encoder, load_clinical_encoder
from dermnet.data.vocabulary import LOCALIZATIONS, SEXES


def make_rows(ages, sexes, sites):
    return pd.DataFrame({"age": ages, "sex": sexes, "localization": sites})


def test_layout_has_age_indicator_and_full_vocabularies():
    encoder = fit_clinical_encoder(make_rows([40.0], ["male"], ["back"]))
    names = encoder.feature_names
    assert names[:2] == ("age", "age_missing")
    assert names[2:5] == tuple(f"sex={s}" for s in SEXES)
    assert names[5:] == tuple(f"localization={s}" for s in LOCALIZATIONS)
    assert encoder.num_features == 2 + 3 + 15 == 20


def test_hand_computed_vector():
    training = make_rows([30.0, 50.0, np.nan], ["male", "female", "male"], ["back"] * 3)
    encoder = fit_clinical_encoder(training)
    # mean 40, population std 10, computed on the two known ages only
    assert (encoder.age_mean, encoder.age_std) == (40.0, 10.0)
    vector = encoder.transform(make_rows([60.0], ["female"], ["face"]))[0]
    expected = np.zeros(20, dtype=np.float32)
    expected[0] = 2.0                                  # (60 - 40) / 10
    expected[2 + SEXES.index("female")] = 1.0
    expected[5 + LOCALIZATIONS.index("face")] = 1.0
    np.testing.assert_array_equal(vector, expected)
    assert vector.dtype == np.float32


def test_missing_age_is_mean_with_indicator():
    encoder = fit_clinical_encoder(make_rows([30.0, 50.0], ["male"] * 2, ["back"] * 2))
    vector = encoder.transform(make_rows([np.nan], ["male"], ["back"]))[0]
    assert vector[0] == 0.0 and vector[1] == 1.0


def test_fit_uses_only_the_rows_given():
    training = make_rows([20.0, 20.0], ["male"] * 2, ["back"] * 2)
    encoder = fit_clinical_encoder(training)
    assert encoder.age_mean == 20.0
    assert encoder.age_std == 1.0  # degenerate spread falls back to 1, stays finite


def test_unseen_and_blank_values_become_unknown_with_warning():
    encoder = fit_clinical_encoder(make_rows([40.0], ["male"], ["back"]))
    rows = make_rows([40.0, 40.0], ["Other", None], ["left wing", " Face "])
    with pytest.warns(UserWarning) as caught:
        vectors = encoder.transform(rows)
    messages = " ".join(str(warning.message) for warning in caught)
    assert "'other'" in messages and "'left wing'" in messages
    sex = vectors[:, 2:5]
    site = vectors[:, 5:]
    assert (sex[:, SEXES.index("unknown")] == 1).all()
    assert site[0, LOCALIZATIONS.index("unknown")] == 1
    assert site[1, LOCALIZATIONS.index("face")] == 1  # case and spaces normalised
    assert (vectors[:, 2:].sum(axis=1) == 2).all()    # exactly one sex and one site


def test_json_round_trip(tmp_path):
    encoder = fit_clinical_encoder(make_rows([35.0, 65.0], ["male"] * 2, ["back"] * 2))
    path = tmp_path / "clinical_encoding.json"
    encoder.save_json(path)
    assert json.loads(path.read_text())["feature_names"][0] == "age"
    assert load_clinical_encoder(path) == encoder


def test_load_rejects_damaged_file(tmp_path):
    path = tmp_path / "clinical_encoding.json"
    path.write_text('{"version": 1, "age_mean": 1.0}')
    with pytest.raises(ValueError, match="clinical_encoding.json"):
        load_clinical_encoder(path)
