"""The synthetic world: beneficiaries in households, their scheme enrolments, payout agents.

Everything is drawn from a seeded numpy Generator, so the same seed gives the same world.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from schemewatch import schemes
from schemewatch.geography import Districts, haversine_km, load_districts, load_state_rates
from schemewatch.geography import scatter_on_land as scatter

ELDER, STUDENT, WORKING_AGE = 0, 1, 2
PERSONA_SHARES = (0.30, 0.12, 0.58)
BENEFICIARIES_PER_AGENT = 250
BENEFICIARIES_PER_OPERATOR = 400
# Cities where migrant workers draw their money far from home.
MIGRATION_HUBS = (
    "New Delhi",
    "Mumbai Suburban",
    "Bengaluru Urban",
    "Surat",
    "Pune",
    "Chennai",
    "Hyderabad",
    "Ludhiana",
    "Kolkata",
)


@dataclass
class World:
    """Beneficiaries, accounts, agents and enrolments as parallel arrays."""

    districts: Districts
    beneficiary_ids: np.ndarray  # str
    district: np.ndarray  # int
    home_lat: np.ndarray
    home_lon: np.ndarray
    account: np.ndarray  # index into account_ids
    phone_hash: np.ndarray  # str
    operator: np.ndarray  # index into operator_ids
    enrolled_day: np.ndarray  # unix day number
    death_day: np.ndarray  # unix day number, -1 if alive
    persona: np.ndarray
    home_agent: np.ndarray  # index into agents
    away_agent: np.ndarray  # hub agent for migrants, -1 otherwise
    agent_ids: np.ndarray
    agent_district: np.ndarray
    agent_lat: np.ndarray
    agent_lon: np.ndarray
    agent_market_weekday: np.ndarray
    operator_ids: list[str]
    account_ids: list[str]
    enrolment_beneficiary: np.ndarray
    enrolment_scheme: np.ndarray  # int8 index into SCHEME_CODES
    enrolment_entitlement: np.ndarray
    enrolment_channel: np.ndarray  # preferred channel, index into CHANNELS
    enrolment_day: np.ndarray
    extra: dict = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.beneficiary_ids)

    def new_account(self) -> int:
        """Open a fresh bank account (used by fraud rings); returns its index."""
        self.account_ids.append(f"AC{len(self.account_ids) + 1:010d}")
        return len(self.account_ids) - 1

    def entitlement_of(self, beneficiary: np.ndarray, scheme: np.ndarray) -> np.ndarray:
        """Each (beneficiary, scheme) pair's entitlement per instalment."""
        keys = self.enrolment_beneficiary.astype(np.int64) * 16 + self.enrolment_scheme
        order = np.argsort(keys, kind="stable")
        wanted = np.asarray(beneficiary, np.int64) * 16 + np.asarray(scheme)
        position = order[np.searchsorted(keys, wanted, sorter=order)]
        return self.enrolment_entitlement[position]

    def agents_in(self, district_index: int) -> np.ndarray:
        """Indexes of the payout agents based in a district."""
        return np.flatnonzero(self.agent_district == district_index)


def phone_hashes(numbers: np.ndarray, salt: str) -> np.ndarray:
    """Salted one-way hashes of phone numbers: linkable, never reversible to the number."""
    # As Python ints: formatting numpy's integers took a third longer (2 million: 3.3 -> 2.4 s).
    return np.array(
        [
            hashlib.blake2b(f"{salt}{n}".encode(), digest_size=8).hexdigest()
            for n in np.asarray(numbers).tolist()
        ]
    )


def build_world(rng: np.random.Generator, n_beneficiaries: int, window_start_day: int) -> World:
    """A seeded population of about `n_beneficiaries` across India's districts."""
    districts = load_districts()
    household_district, household_of = _households(rng, districts, n_beneficiaries)
    district = household_district[household_of]
    house_lat, house_lon = scatter(
        rng,
        districts.latitude[household_district],
        districts.longitude[household_district],
        12.0,
    )
    home_lat, home_lon = house_lat[household_of], house_lon[household_of]
    persona = rng.choice(3, size=n_beneficiaries, p=PERSONA_SHARES)
    account, account_ids = _accounts(rng, household_of)
    phone = _phones(rng, household_of)
    operator, operator_ids, enrolled_day = _enrolment_history(
        rng, districts, district, window_start_day
    )
    agents = _agents(rng, districts, district)
    home_agent = _home_agents(rng, agents["district"], district)
    world = World(
        districts=districts,
        beneficiary_ids=np.array([f"B{i + 1:08d}" for i in range(n_beneficiaries)]),
        district=district,
        home_lat=home_lat,
        home_lon=home_lon,
        account=account,
        phone_hash=phone_hashes(phone, "schemewatch-demo"),
        operator=operator,
        enrolled_day=enrolled_day,
        death_day=np.full(n_beneficiaries, -1, dtype=np.int64),
        persona=persona,
        home_agent=home_agent,
        away_agent=np.full(n_beneficiaries, -1, dtype=np.int64),
        agent_ids=np.array([f"AG{i + 1:06d}" for i in range(len(agents["district"]))]),
        agent_district=agents["district"],
        agent_lat=agents["lat"],
        agent_lon=agents["lon"],
        agent_market_weekday=agents["weekday"],
        operator_ids=operator_ids,
        account_ids=account_ids,
        **_enrolments(rng, districts, district, persona, enrolled_day),
    )
    _assign_migrants(rng, world)
    return world


def _households(rng, districts: Districts, n: int) -> tuple[np.ndarray, np.ndarray]:
    sizes = rng.choice([1, 2, 3, 4], size=n, p=[0.55, 0.3, 0.1, 0.05])
    household_of = np.repeat(np.arange(n), sizes)[:n]
    n_households = household_of[-1] + 1
    weights = districts.population / districts.population.sum()
    return rng.choice(len(districts), size=n_households, p=weights), household_of


def _accounts(rng, household_of: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """One account each, except couples who often share a joint account."""
    n = len(household_of)
    account = np.arange(n)
    second_in_household = np.r_[False, household_of[1:] == household_of[:-1]]
    joint = second_in_household & (rng.random(n) < 0.25)
    account[joint] = account[np.flatnonzero(joint) - 1]
    return account, [f"AC{i + 1:010d}" for i in range(n)]


def _phones(rng, household_of: np.ndarray) -> np.ndarray:
    """Families often share one phone number."""
    n = len(household_of)
    numbers = rng.integers(6_000_000_000, 9_999_999_999, size=n)
    shares = rng.random(household_of[-1] + 1) < 0.6
    household_phone = numbers[np.searchsorted(household_of, np.arange(household_of[-1] + 1))]
    return np.where(shares[household_of], household_phone[household_of], numbers)


def _enrolment_history(rng, districts: Districts, district: np.ndarray, window_start_day: int):
    """Enrolling operators and dates: mostly spread over years, some at enrolment camps."""
    counts = np.bincount(district, minlength=len(districts))
    per_district = np.maximum(1, np.ceil(counts / BENEFICIARIES_PER_OPERATOR)).astype(int)
    first = np.r_[0, np.cumsum(per_district)[:-1]]
    operator = first[district] + (rng.random(len(district)) * per_district[district]).astype(int)
    operator_ids = [f"OP{i + 1:05d}" for i in range(per_district.sum())]
    earliest = window_start_day - 365 * 8
    enrolled_day = rng.integers(earliest, window_start_day - 30, size=len(district))
    camp_days = rng.integers(earliest, window_start_day - 30, size=(len(operator_ids), 4))
    at_camp = rng.random(len(district)) < 0.3
    enrolled_day[at_camp] = camp_days[operator[at_camp], rng.integers(0, 4, at_camp.sum())]
    return operator, operator_ids, enrolled_day


def _agents(rng, districts: Districts, district: np.ndarray) -> dict:
    counts = np.bincount(district, minlength=len(districts))
    per_district = np.maximum(2, np.ceil(counts / BENEFICIARIES_PER_AGENT)).astype(int)
    agent_district = np.repeat(np.arange(len(districts)), per_district)
    lat, lon = scatter(
        rng, districts.latitude[agent_district], districts.longitude[agent_district], 10.0
    )
    weekday = rng.integers(0, 7, size=len(agent_district))
    return {"district": agent_district, "lat": lat, "lon": lon, "weekday": weekday}


def _home_agents(rng, agent_district: np.ndarray, district: np.ndarray) -> np.ndarray:
    first = np.searchsorted(agent_district, np.arange(agent_district.max() + 1))
    count = np.bincount(agent_district)
    return first[district] + (rng.random(len(district)) * count[district]).astype(int)


def _enrolments(rng, districts, district, persona, enrolled_day) -> dict:
    """Scheme enrolments with each beneficiary's entitlement and preferred payout channel."""
    # Looked up once per district, then spread to its people (a lookup per person took seconds
    # for 2 million people and held every person's state name).
    by_state = load_state_rates()
    rates = [by_state[state] for state in districts.state]
    wage = np.array([r.mgnrega_daily_wage for r in rates])[district]
    pension = np.array([r.old_age_pension_monthly for r in rates])[district]
    hilly = np.array([r.hilly for r in rates])[district]
    n = len(district)
    elder, student, adult = (persona == ELDER), (persona == STUDENT), (persona == WORKING_AGE)
    wants = {
        schemes.OLD_AGE_PENSION: elder,
        schemes.PM_KISAN: (elder & (rng.random(n) < 0.3)) | (adult & (rng.random(n) < 0.6)),
        schemes.MGNREGA: adult & (wage > 0) & (rng.random(n) < 0.55),
        schemes.SCHOLARSHIP: student,
        schemes.PMAY_G: adult & (rng.random(n) < 0.08),
    }
    nothing = ~np.logical_or.reduce(list(wants.values()))
    wants[schemes.PM_KISAN] = wants[schemes.PM_KISAN] | nothing
    over_80 = rng.random(n) < 0.15
    entitlement = {
        schemes.PM_KISAN: np.full(n, schemes.PM_KISAN_INSTALMENT),
        schemes.OLD_AGE_PENSION: pension + np.where(over_80, 300.0, 0.0),
        schemes.MGNREGA: wage * schemes.MGNREGA_DAYS_PER_MUSTER_ROLL,
        schemes.SCHOLARSHIP: rng.choice(schemes.SCHOLARSHIP_AMOUNTS, size=n),
        schemes.PMAY_G: np.where(hilly, 130_000.0, 120_000.0) * schemes.PMAY_G_INSTALMENT_SHARES[0],
    }
    parts = {k: [] for k in ("beneficiary", "scheme", "entitlement", "channel", "day")}
    for code, wanted in wants.items():
        who = np.flatnonzero(wanted)
        names, shares = zip(*schemes.SCHEMES[code].channel_mix, strict=True)
        channel_index = [schemes.CHANNELS.index(c) for c in names]
        parts["beneficiary"].append(who)
        parts["scheme"].append(np.full(len(who), schemes.SCHEME_CODES.index(code), np.int8))
        parts["entitlement"].append(entitlement[code][who])
        parts["channel"].append(rng.choice(channel_index, size=len(who), p=shares).astype(np.int8))
        parts["day"].append(enrolled_day[who])
    merged = {k: np.concatenate(v) for k, v in parts.items()}
    order = np.lexsort((merged["scheme"], merged["beneficiary"]))
    return {f"enrolment_{k}": v[order] for k, v in merged.items()}


def _assign_migrants(rng, world: World) -> None:
    """A few working-age beneficiaries draw their money in a distant city where they work."""
    hubs = np.flatnonzero(np.isin(world.districts.name, MIGRATION_HUBS))
    if len(hubs) == 0:
        return
    migrant = (world.persona == WORKING_AGE) & (rng.random(world.size) < 0.004)
    who = np.flatnonzero(migrant)
    hub = hubs[rng.integers(0, len(hubs), len(who))]
    far = haversine_km(
        world.home_lat[who],
        world.home_lon[who],
        world.districts.latitude[hub],
        world.districts.longitude[hub],
    )
    who, hub = who[far > 100], hub[far > 100]
    first = np.searchsorted(world.agent_district, hub)
    world.away_agent[who] = first
