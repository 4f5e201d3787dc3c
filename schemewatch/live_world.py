"""The live feed's picture of the population: a World rebuilt from the stored registry.

The feed pays existing beneficiaries, so it needs their homes, districts, accounts, phones and
enrolments as the generator's World holds them; agents are assigned by district as the generator
does.
"""

from __future__ import annotations

from datetime import date

import numpy as np

from schemewatch import schemes
from schemewatch.geography import haversine_km, load_districts, nearest_district
from schemewatch.population import World
from schemewatch.schedule import BANK, day_number


def _day(text: str | None) -> int:
    return -1 if not text else day_number(date.fromisoformat(text))


def world_from_registry(registry: dict, rng) -> World:
    """Rebuild a World from the registry tables so the feed can pay existing beneficiaries."""
    districts = load_districts()
    district_index = {
        (s, d): i for i, (s, d) in enumerate(zip(districts.state, districts.name, strict=True))
    }

    def locate(state, district, lat, lon) -> int:
        found = district_index.get((state, district))
        return found if found is not None else nearest_district(lat, lon)

    people, agents = registry["beneficiaries"], registry["agents"]
    accounts = sorted({p["account_id"] or f"NOACCOUNT-{p['beneficiary_id']}" for p in people})
    account_index = {a: i for i, a in enumerate(accounts)}
    operators = sorted({p["enrolled_by"] or "unknown" for p in people})
    operator_index = {o: i for i, o in enumerate(operators)}
    district = np.array(
        [
            locate(p["state"], p["district"], p["home_latitude"], p["home_longitude"])
            for p in people
        ],
        dtype=np.int64,
    )
    agent_district = np.array(
        [locate(a["state"], a["district"], a["latitude"], a["longitude"]) for a in agents],
        dtype=np.int64,
    )
    agent_lat = np.array([a["latitude"] for a in agents], dtype=float)
    agent_lon = np.array([a["longitude"] for a in agents], dtype=float)
    home_lat = np.array([p["home_latitude"] for p in people], dtype=float)
    home_lon = np.array([p["home_longitude"] for p in people], dtype=float)
    position = {p["beneficiary_id"]: i for i, p in enumerate(people)}
    enrolments = registry["enrolments"]
    scheme = np.array([schemes.SCHEME_CODES.index(e["scheme"]) for e in enrolments], dtype=np.int8)
    return World(
        districts=districts,
        beneficiary_ids=np.array([p["beneficiary_id"] for p in people]),
        district=district,
        home_lat=home_lat,
        home_lon=home_lon,
        account=np.array(
            [account_index[p["account_id"] or f"NOACCOUNT-{p['beneficiary_id']}"] for p in people],
            dtype=np.int64,
        ),
        phone_hash=np.array([p["phone_hash"] or "" for p in people]),
        operator=np.array(
            [operator_index[p["enrolled_by"] or "unknown"] for p in people], dtype=np.int64
        ),
        enrolled_day=np.array([_day(p["enrolled_on"]) for p in people], dtype=np.int64),
        death_day=np.array([_day(p["date_of_death"]) for p in people], dtype=np.int64),
        persona=np.full(len(people), 2),
        home_agent=_nearest_agents(
            rng, district, home_lat, home_lon, agent_district, agent_lat, agent_lon
        ),
        away_agent=np.full(len(people), -1, dtype=np.int64),
        agent_ids=np.array([a["agent_id"] for a in agents]),
        agent_district=agent_district,
        agent_lat=agent_lat,
        agent_lon=agent_lon,
        agent_market_weekday=np.array([a["market_weekday"] or 0 for a in agents], dtype=np.int64),
        operator_ids=operators,
        account_ids=accounts,
        enrolment_beneficiary=np.array(
            [position[e["beneficiary_id"]] for e in enrolments], dtype=np.int64
        ),
        enrolment_scheme=scheme,
        enrolment_entitlement=np.array([e["entitlement"] for e in enrolments], dtype=float),
        enrolment_channel=_preferred_channels(rng, scheme, have_agents=len(agents) > 0),
        enrolment_day=np.array([_day(e["enrolled_on"]) for e in enrolments], dtype=np.int64),
    )


def _nearest_agents(rng, district, lat, lon, agent_district, agent_lat, agent_lon) -> np.ndarray:
    """A random agent of the beneficiary's district, else the nearest agent anywhere."""
    chosen = np.full(len(district), -1, dtype=np.int64)
    if len(agent_district) == 0:
        return chosen
    for d in np.unique(district):
        rows = np.flatnonzero(district == d)
        local = np.flatnonzero(agent_district == d)
        if len(local):
            chosen[rows] = local[rng.integers(0, len(local), len(rows))]
        else:
            for r in rows:
                chosen[r] = int(np.argmin(haversine_km(lat[r], lon[r], agent_lat, agent_lon)))
    return chosen


def _preferred_channels(rng, scheme: np.ndarray, have_agents: bool) -> np.ndarray:
    channel = np.full(len(scheme), BANK, dtype=np.int8)
    if not have_agents:
        return channel
    for index, code in enumerate(schemes.SCHEME_CODES):
        rows = np.flatnonzero(scheme == index)
        names, shares = zip(*schemes.SCHEMES[code].channel_mix, strict=True)
        options = [schemes.CHANNELS.index(c) for c in names]
        channel[rows] = rng.choice(options, size=len(rows), p=shares)
    return channel
