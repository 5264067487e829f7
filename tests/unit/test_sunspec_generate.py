"""The profile generator on model chains laid out from pysunspec2's definitions: names, scale
factors, sentinels, writable tags and the fallbacks between models."""

from __future__ import annotations

import json

import pytest
from sunspec2 import mb

from bessai.device.profile import parse_profile
from bessai.sim.sunspec import layout
from bessai.sunspec.generate import DispatchScale, GenerateError, generate
from bessai.sunspec.models import UnknownModel, model_def

SCALE = DispatchScale(wchamax_w=5000, inoutwrte_sf=-2)


def profile_doc(model_ids, scale=SCALE):
    chain, end = layout(model_ids)
    doc, _unknown = generate(chain, base=40000, end=end + 1, dispatch=scale)
    parse_profile(json.dumps(doc))  # every generated profile passes the schema and checks
    return doc


def test_der_model_701_wins_over_103_for_power_and_frequency_but_not_for_cabinet_temp():
    tags = profile_doc((1, 103, 701, 124, 802))["tags"]
    chain, _ = layout((1, 103, 701, 124, 802))
    m701 = next(m for m in chain if m.model_id == 701)
    assert tags["active_power"]["address"] == m701.address + model_def(701).point("W").offset
    assert tags["grid_frequency"]["address"] == m701.address + model_def(701).point("Hz").offset
    assert "103_w" in tags
    assert "103_hz" in tags
    assert "inverter_temp" in tags
    assert "701_tmpcab" in tags
    assert "device_status" in tags
    assert "701_st" in tags


def test_soc_falls_back_to_124_chastate_without_a_battery_model():
    tags = profile_doc((1, 103, 124))["tags"]
    assert tags["soc"]["description"].endswith("(SunSpec ChaState)")
    assert tags["soc"]["scale_factor"] == "124_chastate_sf"
    assert "battery_power" not in tags


def test_other_points_are_model_id_and_point_name_in_lower_case_with_their_scale_factor():
    tags = profile_doc((1, 103, 124, 802))["tags"]
    assert tags["103_phvpha"]["scale_factor"] == "103_v_sf"
    assert tags["103_v_sf"]["type"] == "i16"
    assert tags["103_v_sf"]["invalid"] == ["0x8000"]
    assert tags["active_power"]["scale_factor"] == "103_w_sf"
    assert tags["device_status"]["enum"]["4"] == "MPPT"


@pytest.mark.parametrize(("sunspec_type", "size", "tag_name"), [
    ("int16", 1, "active_power"), ("uint16", 1, "103_phvpha"), ("acc32", 2, "103_wh"),
    ("enum16", 1, "device_status"), ("bitfield32", 2, "103_evt1"), ("sunssf", 1, "103_w_sf"),
    ("uint32", 2, "802_ncyc"),
])
def test_not_implemented_sentinels_come_from_pysunspec2(sunspec_type, size, tag_name):
    tags = profile_doc((1, 103, 124, 802))["tags"]
    expected = int.from_bytes(mb.create_unimpl_value(sunspec_type, len=2 * size), "big")
    assert tags[tag_name]["invalid"] == [f"0x{expected:0{4 * size}X}"]


def test_only_the_dispatch_tags_and_the_controller_heartbeat_are_writable():
    doc = profile_doc((1, 103, 124, 802))
    writable = {name for name, tag in doc["tags"].items() if tag["access"] != "r"}
    assert writable == {"124_storctl_mod", "124_inwrte", "124_outwrte",
                        "124_inoutwrte_rvrttms", "802_ctrlhb"}
    # 2500 W of WChaMax 5000 W is 50 %, at InOutWRte_SF -2 the raw register is 5000
    assert doc["tags"]["124_outwrte"]["gain"] * 2500 == pytest.approx(5000)


def test_a_repeated_model_gets_numbered_names_and_no_core_names():
    tags = profile_doc((1, 103, 124, 802, 802))["tags"]
    assert "802_2_soc" in tags
    assert tags["802_2_soc"]["scale_factor"] == "802_2_soc_sf"


def test_a_chain_without_state_of_charge_cannot_make_a_profile():
    chain, end = layout((1, 103))
    with pytest.raises(GenerateError, match="state of charge"):
        generate(chain, base=40000, end=end + 1, dispatch=None)


def test_an_unknown_model_is_a_typed_error():
    with pytest.raises(UnknownModel):
        model_def(64900)


def test_rate_limit_stays_inside_int16_at_a_fine_rate_scale_factor():
    doc = profile_doc((1, 103, 124, 802), DispatchScale(wchamax_w=5000, inoutwrte_sf=-3))
    tag = doc["tags"]["124_inwrte"]
    assert tag["max"] * tag["gain"] <= 0x7FFF  # 100 % would be raw 100000
    assert tag["max"] < 5000
