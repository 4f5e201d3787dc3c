"""India's states and districts (real names, approximate headquarters coordinates) and land checks.

Reference data ships in `schemewatch/data/`; the India outline comes from the `countryinfo` package,
so nothing here needs the internet.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

EARTH_RADIUS_KM = 6371.0088


@dataclass(frozen=True)
class Districts:
    """All districts as parallel arrays (index = district number)."""

    state: np.ndarray  # str
    name: np.ndarray  # str
    latitude: np.ndarray
    longitude: np.ndarray
    population: np.ndarray  # thousands, 2011 census (approximate)

    def __len__(self) -> int:
        return len(self.name)


@dataclass(frozen=True)
class StateRates:
    """Per-state scheme parameters."""

    mgnrega_daily_wage: float
    old_age_pension_monthly: float
    hilly: bool


def _read_csv(name: str) -> list[dict[str, str]]:
    text = resources.files("schemewatch.data").joinpath(name).read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines()))


@lru_cache(maxsize=1)
def load_districts() -> Districts:
    """The district table shipped with Schemewatch."""
    rows = _read_csv("districts.csv")
    return Districts(
        state=np.array([r["state"] for r in rows]),
        name=np.array([r["district"] for r in rows]),
        latitude=np.array([float(r["latitude"]) for r in rows]),
        longitude=np.array([float(r["longitude"]) for r in rows]),
        population=np.array([float(r["population_thousands"]) for r in rows]),
    )


@lru_cache(maxsize=1)
def load_state_rates() -> dict[str, StateRates]:
    """MGNREGA wage, old-age pension (ages 60-79, central + state) and hilly flag per state."""
    return {
        r["state"]: StateRates(
            float(r["mgnrega_daily_wage"]), float(r["old_age_pension_monthly"]), r["hilly"] == "1"
        )
        for r in _read_csv("states.csv")
    }


def haversine_km(lat1, lon1, lat2, lon2) -> np.ndarray:
    """Great-circle distance in km; works element-wise on arrays."""
    lat1, lon1, lat2, lon2 = (
        np.radians(np.asarray(v, dtype=float)) for v in (lat1, lon1, lat2, lon2)
    )
    a = (
        np.sin((lat2 - lat1) / 2) ** 2
        + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


@lru_cache(maxsize=1)
def india_outline():
    """India's outline as a prepared shapely geometry (from countryinfo's bundled GeoJSON)."""
    import shapely
    from countryinfo import CountryInfo

    feature = CountryInfo("India").geo_json()["features"][0]
    geometry = shapely.geometry.shape(feature["geometry"])
    shapely.prepare(geometry)
    return geometry


def india_outline_geojson() -> dict:
    """India's outline as GeoJSON, for drawing maps offline."""
    from countryinfo import CountryInfo

    return CountryInfo("India").geo_json()


def on_land(latitude, longitude) -> np.ndarray:
    """True where a point lies inside India's outline."""
    import shapely

    return shapely.contains_xy(india_outline(), np.asarray(longitude), np.asarray(latitude))


def scatter_on_land(rng, centre_lat, centre_lon, spread_km) -> tuple[np.ndarray, np.ndarray]:
    """Points scattered around centres; any that fall outside India are pulled back in."""
    centre_lat = np.asarray(centre_lat, dtype=float)
    centre_lon = np.asarray(centre_lon, dtype=float)
    scale = np.asarray(spread_km, dtype=float) / 111.0
    lat = centre_lat + rng.normal(0.0, 1.0, centre_lat.shape) * scale
    lon = centre_lon + rng.normal(0.0, 1.0, centre_lat.shape) * scale / np.cos(
        np.radians(centre_lat)
    )
    for shrink in (0.5, 0.25, 0.0):
        outside = ~on_land(lat, lon)
        if not outside.any():
            break
        lat[outside] = centre_lat[outside] + (lat[outside] - centre_lat[outside]) * shrink
        lon[outside] = centre_lon[outside] + (lon[outside] - centre_lon[outside]) * shrink
    return np.round(lat, 5), np.round(lon, 5)


def _place_key(name: str) -> str:
    return " ".join(name.split()).casefold()


@lru_cache(maxsize=1)
def _places() -> tuple[dict[str, str], dict[tuple[str, str], str]]:
    districts = load_districts()
    states = {_place_key(s): str(s) for s in districts.state}
    names = {
        (_place_key(s), _place_key(d)): str(d)
        for s, d in zip(districts.state, districts.name, strict=True)
    }
    return states, names


def canonical_state(name: str) -> str | None:
    """The state's name as in our table (case and spacing ignored), or None if unknown."""
    return _places()[0].get(_place_key(name))


def canonical_district(state: str, name: str) -> str | None:
    """The district's name as in our table, if it is one of `state`'s districts; else None."""
    return _places()[1].get((_place_key(state), _place_key(name)))


def nearest_district(latitude: float, longitude: float) -> int:
    """Index of the district whose headquarters is closest to a point."""
    districts = load_districts()
    distances = haversine_km(latitude, longitude, districts.latitude, districts.longitude)
    return int(np.argmin(distances))
