"""Scenario files: the catalogue parses; each mistake in a file is one clear error."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.fuzz import scenario_toml
from harness.model import DMA_API, NO_DRIVER, OWNED, Model, get_profile
from harness.model.build import build_model, model_bind
from harness.platforms import AARCH64_SMMUV3, X86_64_VTD
from harness.scenario import load_scenario
from harness.steps import (
    Bind,
    ByProfile,
    Checks,
    DriverChoice,
    Observe,
    Operation,
    Step,
    TypeWrite,
    VfioCall,
    Via,
    resolve,
)
from harness.topology import device_bdf

CATALOGUE = sorted((Path(__file__).parent.parent / "scenarios").glob("*.toml"))


@pytest.mark.parametrize("path", CATALOGUE, ids=[p.stem for p in CATALOGUE])
def test_catalogue_parses(path: Path) -> None:
    s = load_scenario(path, X86_64_VTD)
    assert s.steps and s.name
    kinds = Operation | TypeWrite | Bind | Observe | VfioCall
    assert all(isinstance(st.action, kinds) for st in s.steps)


def test_device_ids_resolve_to_addresses() -> None:
    s = load_scenario(CATALOGUE[0], X86_64_VTD)
    bdfs = {d.id: device_bdf(s.topology, d) for d in s.topology.devices}
    assert resolve("attach_dev d edu2", bdfs) == "attach_dev d 0000:01:01.0"


@pytest.mark.parametrize(("text", "needle"), [
    ("[[step]\n", "not valid TOML"),
    ('colour = 1\n[[step]]\nop = "free d"\n', "unknown key(s) colour"),
    ('name = "x"\n', "no steps"),
    ('[[step]]\nop = "frobnicate d"\n', "unknown operation 'frobnicate d'"),
    ('[[step]]\nop = "free d"\nbind = { edu0 = "owned" }\n',
     "exactly one of 'op', 'bind' and 'observe'"),
    ('[[step]]\nbind = { edu9 = "owned" }\n', "unknown device 'edu9'"),
    ('[[step]]\nbind = { edu0 = "nvme" }\n', "unknown driver kind 'nvme'"),
    ('[[step]]\nop = "free d"\nexpect = "ENOPE"\n', "step 1: expect 'ENOPE' is not an errno name"),
    ('[[step]]\nop = "free d"\nstate = { edu9 = "@d" }\n', "step 1: state must map device ids"),
    ('[[step]]\nop = "free d"\nevents = "dmar_fault"\n', "step 1: events must be a list"),
    ('[[step]]\nop = "free d"\nwhen = 1\n', "step 1: unknown key(s) when"),
    ('topology = "nowhere"\n[[step]]\nop = "free d"\n', "topology 'nowhere' is neither"),
    ('profiles = "linux-6.1"\n[[step]]\nop = "free d"\n', "'profiles' must be a list"),
    ('[[step]]\nop = "free d"\ntypes = { edu0 = "bogus" }\n', "step 1: types must map"),
    ('[[step]]\nop = "free d"\ntypes = { edu0 = "auto" }\n', "step 1: types must map"),
    ('[[step]]\nop = "free d"\ntypes = { edu9 = "DMA" }\n', "step 1: types must map"),
    ('[[step]]\nop = "free d"\ntypes = "DMA"\n', "step 1: types must map"),
    ('[[step]]\nop = "free d"\nvia = "drivers_probe"\n', "step 1: 'via' must be one of"),
    ('[[step]]\nop = "free d"\nvia = "bind"\n[[step]]\nop = "free d"\nvia = "probe"\n',
     "step 2: 'via' must be one of bind, drivers_probe, with 'bind'"),
    ('[[step]]\nbind = { edu0 = "owned" }\nvia = "new_id"\n', "step 1: 'via' must be one of"),
    ('[[step]]\nop = "set_type edu0"\n', "step 1: set_type takes 2 argument(s) (dev, request), "
                                          "got 1"),
    ('[[step]]\nop = "set_type edu0 DMA now"\n', "step 1: set_type takes 2 argument(s)"),
    ('[[step]]\nop = "set_type"\n', "step 1: set_type takes 2 argument(s)"),
    # The mistakes a new user made that only showed after a guest booted (issue 11):
    ('[[step]]\nop = "attach_dev d1"\n', "step 1: attach_dev takes 2 argument(s) (handle, dev), "
                                        "got 1 in 'attach_dev d1' (write op = 'attach_dev HANDLE "
                                        "edu0')"),
    ('[[step]]\nop = "attach_dev d edu9"\n', "step 1: 'edu9' in 'attach_dev d edu9' is not a "
                                            "device of the topology (use one of edu0, edu1, "
                                            "edu2, edu3)"),
    ('[[step]]\nop = "dma edu0 d 0x1000 0x100 extra"\n', "step 1: dma takes 4 argument(s)"),
    ('[[step]]\nop = "free d"\nstate = { edu0 = "defualt" }\n',
     "step 1: state must map device ids to domains (not edu0 = 'defualt')"),
    ('[[step]]\nop = "free d"\nstate = { edu0 = "@" }\n', "step 1: state must map"),
    ('[[step]]\nop = "free d"\nexpect = { "linux-6.1" = 0, "linux-6.2" = "EBUSY" }\n',
     "step 1: expect names unknown profile(s) linux-6.2"),
    ('[[step]]\nop = "free d"\nexpect = { "linux-6.12" = "ENOPE" }\n',
     "step 1: expect (linux-6.12) 'ENOPE' is not an errno name"),
    ('[[step]]\nobserve = 1\n', "step 1: 'observe' must be true"),
    ('[[step]]\nobserve = true\nstate = { "linux-6.3" = { edu0 = "none" } }\n',
     "step 1: state names unknown profile(s) linux-6.3"),
    ('[[step]]\nobserve = true\nstate = { "linux-6.1" = { edu0 = "nowhere" } }\n',
     "step 1: state (linux-6.1) must map device ids to domains (not edu0 = 'nowhere')"),
    ('[[step]]\nobserve = true\nevents = { "linux-6.1" = "warning" }\n',
     "step 1: events (linux-6.1) must be a list"),
])
def test_mistakes_are_one_clear_line(tmp_path: Path, text: str, needle: str) -> None:
    f = tmp_path / "s.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_scenario(f, X86_64_VTD)
    assert needle in str(info.value)
    assert str(info.value).startswith(f"scenario {f}: ")
    assert "\n" not in str(info.value)


def test_expect_accepts_names_and_numbers(tmp_path: Path) -> None:
    f = tmp_path / "s.toml"
    f.write_text('[[step]]\nop = "free d"\nexpect = "EBUSY"\n[[step]]\nop = "free d"\n'
                 'expect = -22\n[[step]]\nop = "free d"\nexpect = 0\n')
    assert [s.checks.rc.default for s in load_scenario(f, X86_64_VTD).steps] == [-16, -22, 0]


def test_a_fuzz_reproducer_is_a_loadable_scenario(tmp_path: Path) -> None:
    f = tmp_path / "repro.toml"
    f.write_text(scenario_toml("repro", "default", ["alloc a edu0", "attach_dev a edu2"]))
    s = load_scenario(f, X86_64_VTD)
    assert [st.label for st in s.steps] == ["alloc a edu0", "attach_dev a edu2"]


def test_a_per_profile_expect_table(tmp_path: Path) -> None:
    f = tmp_path / "s.toml"
    f.write_text('[[step]]\nop = "set_type edu0 identity"\n'
                 'expect = { "linux-6.1" = "EBUSY", "linux-6.12" = 0 }\n'
                 '[[step]]\nop = "free d"\nexpect = { "proposal-2022" = -1 }\n'
                 '[[step]]\nop = "free d"\nexpect = "ENOENT"\n'
                 '[[step]]\nop = "free d"\n')
    a, b, c, d = load_scenario(f, X86_64_VTD).steps
    assert a.checks.rc.default is None
    assert a.checks.rc.per_profile == (("linux-6.1", -errno.EBUSY), ("linux-6.12", 0))
    assert [a.checks.rc.get(p) for p in ("linux-6.1", "linux-6.12", "proposal-2022")] == \
        [-errno.EBUSY, 0, None]
    assert [b.checks.rc.get(p) for p in ("proposal-2022", "linux-6.1")] == [-errno.EPERM, None]
    assert [c.checks.rc.get(p) for p in ("linux-6.1", "linux-6.12")] == [-errno.ENOENT] * 2
    assert d.checks.rc.get("linux-6.1") is None


def test_a_profile_entry_overrides_a_plain_expect() -> None:
    step = Step(Operation("free d"), Checks(rc=ByProfile(-errno.ENOENT, (("linux-6.12", 0),))))
    assert step.checks.rc.get("linux-6.12") == 0
    assert step.checks.rc.get("linux-6.1") == -errno.ENOENT


def test_types_and_via_parse(tmp_path: Path) -> None:
    f = tmp_path / "s.toml"
    f.write_text('[[step]]\nop = "set_type edu0 DMA-FQ"\n'
                 'types = { edu1 = "none", edu0 = "DMA-FQ" }\n'
                 '[[step]]\nbind = { edu0 = "dma_api" }\nvia = "drivers_probe"\n'
                 '[[step]]\nbind = { edu0 = "dma_api" }\n')
    a, b, c = load_scenario(f, X86_64_VTD).steps
    assert a.checks.types.get("linux-6.1") == (("edu0", "DMA-FQ"), ("edu1", "none"))
    assert a.action == TypeWrite("edu0", "DMA-FQ")
    assert (b.action, c.action) == (Bind((("edu0", DriverChoice.DMA_API),), Via.DRIVERS_PROBE),
                                    Bind((("edu0", DriverChoice.DMA_API),), Via.BIND))
    assert (b.label, c.label) == ("probe edu0=dma_api", "bind edu0=dma_api")


E0, E1, BR, E2, E3 = "0000:00:03.0", "0000:00:04.0", "0000:00:02.0", "0000:01:01.0", \
    "0000:01:02.0"


def _model(profile: str, drivers: dict[str, str] | None = None) -> Model:
    kinds = {E0: OWNED, E1: OWNED, BR: NO_DRIVER, E2: OWNED, E3: OWNED, **(drivers or {})}
    return Model(get_profile(profile), False, {2: [E0], 3: [E1], 1: [BR, E2, E3]}, kinds)


@pytest.mark.parametrize("profile", ["linux-6.1", "linux-6.12"])
def test_model_bind_refused_by_bind_or_drivers_probe(profile: str) -> None:
    # iommu_device_use_default_domain: -EBUSY on an owned group; bind_store returns it,
    # drivers_probe_store turns any failure into -EINVAL.
    for via, rc in (("bind", -errno.EBUSY), ("drivers_probe", -errno.EINVAL)):
        m = _model(profile, {E1: NO_DRIVER})
        assert m.apply(f"claim_group {E1} o").rc == 0
        assert model_bind(m, E1, "dma_api", via) == rc, via
        g = m.state.groups[3]
        assert (m.state.drivers[E1], g.owner_cnt, g.owner) == (NO_DRIVER, 1, "o")
    m = _model(profile, {E1: NO_DRIVER})
    m.apply(f"claim_group {E1} o")
    assert model_bind(m, E1, "dma_api") == -errno.EBUSY  # via defaults to bind


@pytest.mark.parametrize("via", ["bind", "drivers_probe"])
def test_model_bind_succeeds_the_same_either_way(via: str) -> None:
    m = _model("linux-6.1")
    assert model_bind(m, E1, "dma_api", via) == 0
    assert (m.state.drivers[E1], m.state.groups[3].owner_cnt) == (DMA_API, 1)
    assert model_bind(m, E1, "owned", via) == 0  # the DMA-API driver gives its count back
    assert (m.state.drivers[E1], m.state.groups[3].owner_cnt) == (OWNED, 0)
    # Off the default domain but nobody counts: iommu_device_use_default_domain does not look.
    assert [m.apply(line).rc for line in (f"alloc d {E1}", f"attach_group d {E1}")] == [0, 0]
    assert model_bind(m, E1, "dma_api", via) == 0
    assert m.state.groups[3].owner_cnt == 1
    assert model_bind(m, E1, "none", via) == 0
    assert m.state.groups[3].owner_cnt == 0


@pytest.mark.parametrize("via", ["bind", "drivers_probe"])
def test_model_bind_refused_on_a_counted_group_off_its_default_domain(via: str) -> None:
    m = _model("linux-6.1", {E2: DMA_API})
    assert [m.apply(line).rc for line in (f"alloc d {E3}", f"attach_group d {E3}")] == [0, 0]
    rc = model_bind(m, BR, "dma_api", via)
    assert rc == (-errno.EBUSY if via == "bind" else -errno.EINVAL)
    assert m.state.groups[1].owner_cnt == 1


def test_model_bind_with_pasids_attached() -> None:
    # 6.12 iommu_device_use_default_domain: -EBUSY with PASIDs on a counted group.
    m = _model("linux-6.12", {E2: DMA_API})
    assert [m.apply(line).rc for line in (f"alloc a {E3}", f"attach_pasid a {E3} 1")] == [0, 0]
    assert model_bind(m, BR, "dma_api") == -errno.EBUSY
    assert model_bind(m, BR, "dma_api", "drivers_probe") == -errno.EINVAL
    assert m.state.groups[1].pasids == {1: "a"}
    # Nobody counts: PASIDs do not matter.
    n = _model("linux-6.12")
    assert [n.apply(line).rc for line in (f"alloc a {E3}", f"attach_pasid a {E3} 1")] == [0, 0]
    assert model_bind(n, BR, "dma_api") == 0
    # 6.1 has no PASID attach: the same bind succeeds.
    o = _model("linux-6.1", {E2: DMA_API})
    assert o.apply(f"alloc a {E3}").rc == 0
    assert o.apply(f"attach_pasid a {E3} 1").guard
    assert model_bind(o, BR, "dma_api") == 0


def test_unbinding_a_bound_device_drops_the_groups_pasids() -> None:
    # ih_attach's remove callback detaches the module's PASIDs on the device's group.
    m = _model("linux-6.12", {E2: DMA_API})
    assert [m.apply(line).rc for line in (f"alloc a {E3}", f"attach_pasid a {E3} 1",
                                          f"attach_pasid a {E3} 2")] == [0, 0, 0]
    assert model_bind(m, E2, "dma_api") == 0  # unbind first: the PASIDs go, the bind works
    assert m.state.groups[1].pasids == {}
    assert not any(h.kind == "pasid" for h in m.state.holds)
    assert m.apply(f"detach_pasid a {E3} 1").rc == -errno.ENOENT
    assert m.apply("free a").rc == 0
    # An unbound device being bound does not drop them.
    n = _model("linux-6.12", {E0: NO_DRIVER})
    assert [n.apply(line).rc for line in (f"alloc a {E0}", f"attach_pasid a {E0} 1")] == [0, 0]
    assert model_bind(n, E0, "owned") == 0
    assert n.state.groups[2].pasids == {1: "a"}


BIRTH = Path(__file__).parent.parent / "integration" / "group-birth-at-probe.toml"


@pytest.mark.parametrize("profile", ["linux-6.1", "linux-6.12"])
def test_smmuv3_groups_are_born_at_first_probe(profile: str) -> None:
    s = load_scenario(BIRTH, AARCH64_SMMUV3)
    bdf = {d.id: device_bdf(s.topology, d) for d in s.topology.devices}
    bound = ["edu1", "edu2"]  # edu2 took the bridge's alias; edu0 and edu3 never probed
    model = build_model(s, AARCH64_SMMUV3, get_profile(profile),
                        {bdf[d]: "ih_edu_owned" for d in bound}, bound)
    assert model.domain_of(bdf["edu0"]) == "none"
    assert model_bind(model, bdf["edu0"], "owned") == 0
    assert model.domain_of(bdf["edu0"]) == "default"  # a new singleton group
    assert model_bind(model, bdf["edu3"], "owned") == 0
    assert model.domain_of(bdf["edu3"]) == "none"  # the alias stream ID is edu2's
    assert model_bind(model, bdf["edu0"], "none") == 0
    assert model.domain_of(bdf["edu0"]) == "default"  # the group outlives the driver


def test_no_birth_where_groups_come_at_device_add() -> None:
    s = load_scenario(BIRTH, AARCH64_SMMUV3)
    bdf = {d.id: device_bdf(s.topology, d) for d in s.topology.devices}
    model = build_model(s, AARCH64_SMMUV3, get_profile("linux-7.2"), {}, [])
    assert model.births == {}
    assert model.domain_of(bdf["edu0"]) == "default"  # 7.x: every device has its group


def test_state_types_and_events_take_per_profile_tables(tmp_path: Path) -> None:
    f = tmp_path / "s.toml"
    f.write_text('[[step]]\nobserve = true\n'
                 'state = { "linux-6.1" = { edu0 = "default" }, "linux-7.2" = { edu0 = "none" } }\n'
                 'types = { "linux-7.2" = { edu1 = "DMA" } }\n'
                 'events = { "linux-6.12" = ["warning"] }\n')
    (step,) = load_scenario(f, X86_64_VTD).steps
    assert step.action == Observe() and step.label == "observe"
    c = step.checks
    assert c.state.get("linux-6.1") == (("edu0", "default"),)
    assert c.state.get("linux-7.2") == (("edu0", "none"),)
    assert c.state.get("linux-6.12") == ()
    assert c.types.get("linux-7.2") == (("edu1", "DMA"),) and c.types.get("linux-6.1") == ()
    assert c.events.get("linux-6.12") == ("warning",) and c.events.get("linux-7.2") == ()


def test_a_fuzzer_step_is_an_operation_or_a_type_write() -> None:
    assert Step.op("attach_dev a edu0").action == Operation("attach_dev a edu0")
    assert Step.op("set_type edu0 identity").action == TypeWrite("edu0", "identity")
